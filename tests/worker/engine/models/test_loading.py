"""Safe loading: every format, refusal of code-running files, clear errors for broken or mismatched weights."""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from prunekit.spec.job import ModelSpec
from worker.engine.errors import InvalidModelError, UnsafeModelError
from worker.engine.models import load_model
from worker.engine.models.builtin import DigitsCNN
from worker.engine.models.pt2 import _hardened_reader

DIGITS = ModelSpec(architecture="prunekit/digits_cnn")


class _Evil:
    """Unpickling this runs a shell command that creates `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def _outputs_match(module: torch.nn.Module, reference: torch.nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.allclose(module(x), reference(x), atol=1e-6)


@pytest.mark.parametrize(
    ("key", "fmt"),
    [
        ("torchscript", "torchscript"),
        ("export", "export"),
        ("torch.save zip", "state_dict"),
        ("torch.save legacy", "state_dict"),
        ("safetensors", "state_dict"),
    ],
)
def test_loads_every_format(files: dict[str, Path], cnn: torch.nn.Module, x: torch.Tensor, key: str, fmt: str) -> None:
    loaded = load_model(files[key], DIGITS)
    assert loaded.format == fmt
    assert loaded.source_container == {"torchscript": "torchscript zip", "export": "pt2 zip"}.get(key, key)
    assert _outputs_match(loaded.module, cnn, x)
    assert loaded.supports_train_mode is (fmt != "export")
    if fmt == "state_dict":
        assert loaded.architecture == "prunekit/digits_cnn"
        assert isinstance(loaded.module, DigitsCNN)


def test_export_batch_dimension_static_or_dynamic(files: dict[str, Path], cnn: torch.nn.Module, tmp_path: Path) -> None:
    assert load_model(files["export"], ModelSpec()).fixed_batch_size is None  # exported with a dynamic batch
    path = tmp_path / "static.pt2"
    with open(path, "wb") as fh:
        torch.export.save(torch.export.export(cnn, (torch.zeros(3, 1, 8, 8),)), fh)
    assert load_model(path, ModelSpec()).fixed_batch_size == 3


def test_state_dict_wrapped_in_checkpoint_dict(cnn: torch.nn.Module, x: torch.Tensor, tmp_path: Path) -> None:
    for key in ("state_dict", "model_state_dict"):
        path = tmp_path / f"{key}.pt"
        torch.save({key: cnn.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1}}, path)
        assert _outputs_match(load_model(path, DIGITS).module, cnn, x)


def test_dataparallel_prefix_is_stripped(cnn: torch.nn.Module, x: torch.Tensor, tmp_path: Path) -> None:
    path = tmp_path / "dp.pt"
    torch.save({f"module.{k}": v for k, v in cnn.state_dict().items()}, path)
    assert _outputs_match(load_model(path, DIGITS).module, cnn, x)


# --- refusing files that would run code ------------------------------------------------------------------------


def test_malicious_torch_save_zip_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.pt"
    torch.save({"features.0.weight": torch.zeros(1), "x": _Evil(marker)}, path)
    with pytest.raises(UnsafeModelError, match=r"refused: unpickling would execute code \(global posix\.system\)"):
        load_model(path, DIGITS)
    assert not marker.exists()


def test_malicious_legacy_pickle_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(UnsafeModelError, match="nothing was run; save a state_dict or use safetensors"):
        load_model(path, DIGITS)
    assert not marker.exists()


def test_pickled_whole_module_is_refused(cnn: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(cnn, path)  # pickles the class by reference: loading it would import and run code
    with pytest.raises(UnsafeModelError, match=r"global .*DigitsCNN"):
        load_model(path, DIGITS)


class _WritesFiles(torch.nn.Module):
    """TorchScript that writes a file when run: the interpreter allows aten::save."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.path)
        return x


def test_torchscript_that_writes_files_is_refused(tmp_path: Path) -> None:
    from worker.engine.models.torchscript import check_torchscript_module

    marker = tmp_path / "written.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(_WritesFiles(str(marker)))
        torch.jit.save(scripted, str(tmp_path / "evil.ts"))
    with pytest.raises(UnsafeModelError, match=r"calls 'save' \(code/__torch__/.*line \d+\), which reads or writes"):
        load_model(tmp_path / "evil.ts", ModelSpec())
    with pytest.raises(UnsafeModelError, match=r"forward calls aten::save"):  # the check after loading, too
        check_torchscript_module(scripted)
    assert not marker.exists()


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes], add: dict[str, bytes] | None = None) -> None:
    """Copy a zip, replacing entries whose name ends with a key of `replace`, adding `add` under the same prefix."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        prefix = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(f"{prefix}/{name}", data)


def _read_entry(path: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith(suffix)))


def _pickled_weight_pt2(files: dict[str, Path], tmp_path: Path, marker: Path) -> Path:
    config = json.loads(_read_entry(files["export"], "data/weights/model_weights_config.json"))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True  # torch's reader then runs torch.load(weights_only=False) on it
    dst = tmp_path / "evil_weight.pt2"
    _rewrite_zip(
        files["export"],
        dst,
        {
            "data/weights/model_weights_config.json": json.dumps(config).encode(),
            f"data/weights/{first['path_name']}": pickle.dumps(_Evil(marker), protocol=2),
        },
    )
    return dst


def test_pt2_with_pickled_weight_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    with pytest.raises(UnsafeModelError, match=r"would execute code \(global posix\.system\)"):
        load_model(_pickled_weight_pt2(files, tmp_path, marker), ModelSpec())
    assert not marker.exists()


def test_pt2_reader_is_hardened_even_without_the_archive_check(files: dict[str, Path], tmp_path: Path) -> None:
    from torch.export.pt2_archive._package import load_pt2

    marker = tmp_path / "PWNED"
    path = _pickled_weight_pt2(files, tmp_path, marker)
    with pytest.raises(Exception, match=r"GLOBAL posix\.system"), _hardened_reader(), open(path, "rb") as fh:
        load_pt2(fh)
    assert not marker.exists()


def test_pt2_with_malicious_sample_inputs_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    dst = tmp_path / "evil_inputs.pt2"
    _rewrite_zip(files["export"], dst, {"data/sample_inputs/model.pt": pickle.dumps(_Evil(marker), protocol=2)})
    with pytest.raises(UnsafeModelError, match="sample inputs"):
        load_model(dst, ModelSpec())
    assert not marker.exists()


def _edit_program(files: dict[str, Path], dst: Path, edit: object) -> Path:
    program = json.loads(_read_entry(files["export"], "models/model.json"))
    edit(program)  # type: ignore[operator]
    _rewrite_zip(files["export"], dst, {"models/model.json": json.dumps(program).encode()})
    return dst


def test_pt2_calling_a_python_function_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    def edit(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    with pytest.raises(UnsafeModelError, match=r"calls 'torch\.os\.system', which is not a PyTorch operator"):
        load_model(_edit_program(files, tmp_path / "evil_target.pt2", edit), ModelSpec())


def test_pt2_with_code_in_a_shape_expression_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"

    def edit(program: dict) -> None:
        payload = f"__import__('os').system('touch {marker}')"
        program["graph_module"]["graph"]["sym_int_values"]["evil"] = {"as_expr": {"expr_str": payload, "hint": None}}

    with pytest.raises(UnsafeModelError, match="symbolic-shape expression"):
        load_model(_edit_program(files, tmp_path / "evil_expr.pt2", edit), ModelSpec())
    assert not marker.exists()


def test_pt2_with_aotinductor_code_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "aoti.pt2"
    _rewrite_zip(files["export"], dst, {}, add={"data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(UnsafeModelError, match="AOTInductor"):
        load_model(dst, ModelSpec())


# --- broken or mismatched weights ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["torchscript", "export", "torch.save zip", "torch.save legacy", "safetensors"])
def test_truncated_file_is_invalid(files: dict[str, Path], tmp_path: Path, key: str) -> None:
    data = files[key].read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(InvalidModelError, match="truncated or corrupt"):
        load_model(path, DIGITS)


def test_random_bytes_and_empty_file_are_invalid(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(InvalidModelError, match="not a recognized model format"):
        load_model(path, DIGITS)
    path.write_bytes(b"")
    with pytest.raises(InvalidModelError, match="empty"):
        load_model(path, DIGITS)


def _nan_model(cnn: torch.nn.Module) -> torch.nn.Module:
    broken = DigitsCNN()
    broken.load_state_dict(cnn.state_dict())
    with torch.no_grad():
        broken.classifier[1].weight[0, 3] = float("nan")
        broken.features[1].running_var[2] = float("inf")
    return broken.eval()


def test_nan_in_state_dict_names_the_tensors(cnn: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "nan.safetensors"
    save_file({k: v.contiguous() for k, v in _nan_model(cnn).state_dict().items()}, str(path))
    with pytest.raises(
        InvalidModelError, match=r"NaN or Inf.*classifier\.1\.weight \(1 of 32768\).*features\.1\.running_var"
    ):
        load_model(path, DIGITS)


def test_nan_in_torchscript_and_export(cnn: torch.nn.Module, tmp_path: Path) -> None:
    broken = _nan_model(cnn)
    ts = tmp_path / "nan_ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(broken), str(ts))
    with pytest.raises(InvalidModelError, match=r"classifier\.1\.weight"):
        load_model(ts, ModelSpec())
    ep = tmp_path / "nan_ep"
    with open(ep, "wb") as fh:
        torch.export.save(torch.export.export(broken, (torch.zeros(2, 1, 8, 8),)), fh)
    with pytest.raises(InvalidModelError, match=r"NaN or Inf.*classifier\.1\.weight"):
        load_model(ep, ModelSpec())


def test_non_tensor_values_are_named(cnn: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "mixed.pt"
    torch.save({**cnn.state_dict(), "epoch": 7, "note": "hi"}, path)
    with pytest.raises(InvalidModelError, match=r"not tensors: epoch \(int\), note \(str\)"):
        load_model(path, DIGITS)


def test_unknown_architecture_lists_known_names(files: dict[str, Path]) -> None:
    with pytest.raises(InvalidModelError, match=r"unknown architecture 'prunekit/nope'.*digits_cnn.*tiny_resnet"):
        load_model(files["safetensors"], ModelSpec(architecture="prunekit/nope"))
    with pytest.raises(InvalidModelError, match=r"unknown architecture namespace 'acme'.*prunekit.*torchvision"):
        load_model(files["safetensors"], ModelSpec(architecture="acme/net"))


def test_missing_and_unexpected_keys_are_named(cnn: torch.nn.Module, tmp_path: Path) -> None:
    state = dict(cnn.state_dict())
    del state["classifier.4.bias"]
    state["classifier.9.weight"] = torch.zeros(3)
    path = tmp_path / "keys.pt"
    torch.save(state, path)
    with pytest.raises(InvalidModelError) as info:
        load_model(path, DIGITS)
    message = str(info.value)
    assert "missing keys: classifier.4.bias" in message
    assert "unexpected keys: classifier.9.weight" in message
    assert "prunekit/digits_cnn" in message


def test_shape_mismatch_is_named(cnn: torch.nn.Module, files: dict[str, Path]) -> None:
    spec = ModelSpec(architecture="prunekit/digits_cnn", kwargs={"num_classes": 3})
    with pytest.raises(InvalidModelError, match=r"shape mismatches: classifier\.4\.weight \(file \[10, 64\], "):
        load_model(files["safetensors"], spec)


def test_state_dict_needs_an_architecture(files: dict[str, Path]) -> None:
    with pytest.raises(InvalidModelError, match=r"set model\.architecture"):
        load_model(files["safetensors"], ModelSpec())


def test_declared_format_must_match_content(files: dict[str, Path]) -> None:
    with pytest.raises(InvalidModelError, match=r"model.format is 'torchscript' but the file is a pt2 zip"):
        load_model(files["export"], ModelSpec(format="torchscript"))
    assert load_model(files["export"], ModelSpec(format="export")).format == "export"
