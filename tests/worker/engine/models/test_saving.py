"""Saving: outputs load with plain PyTorch (no prunekit), keep modified weights, and are written atomically."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunekit.spec.job import ModelSpec
from worker.engine.errors import UnsupportedError
from worker.engine.models import LoadedModel, load_model, save_model
from worker.engine.models.builtin import DigitsCNN

DIGITS = ModelSpec(architecture="prunekit/digits_cnn")


def _plain_torchscript(path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))


def _plain_export(path: Path) -> torch.export.ExportedProgram:
    with open(path, "rb") as fh:
        return torch.export.load(fh)


def _prune_and_step(model: LoadedModel, x: torch.Tensor) -> None:
    """What a job does to a model: zero half of a weight, then one optimizer step (gradients through the module)."""
    params = dict(model.module.named_parameters())
    weight = params["classifier.1.weight"]
    loss = model.module(x).logsumexp(dim=1).mean()
    loss.backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0, "no gradient reached the weights"
    with torch.no_grad():
        for p in params.values():
            if p.grad is not None:
                p -= 0.5 * p.grad
        weight[:, : weight.shape[1] // 2] = 0


def test_state_dict_to_torchscript(files: dict[str, Path], x: torch.Tensor, tmp_path: Path) -> None:
    model = load_model(files["safetensors"], DIGITS)
    notes: list[str] = []
    path = save_model(model, tmp_path, "torchscript", x[:1], notes=notes)
    assert path == tmp_path / "model.pt"
    assert any("torch.jit.script" in n for n in notes)
    reloaded = _plain_torchscript(path)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), model.module(x), atol=1e-6)


def test_state_dict_to_export_has_dynamic_batch(files: dict[str, Path], x: torch.Tensor, tmp_path: Path) -> None:
    model = load_model(files["safetensors"], DIGITS)
    notes: list[str] = []
    path = save_model(model, tmp_path, "export", x[:1], notes=notes)
    assert path.suffix == ".pt2"
    program = _plain_export(path)
    with torch.no_grad():
        for batch in (x, x[:1]):
            assert torch.allclose(program.module()(batch), model.module(batch), atol=1e-6)
    assert any("dynamic batch" in n for n in notes)


def test_state_dict_to_safetensors_with_metadata(files: dict[str, Path], x: torch.Tensor, tmp_path: Path) -> None:
    spec = ModelSpec(architecture="prunekit/digits_cnn", kwargs={"num_classes": 10, "width": 16})
    model = load_model(files["torch.save zip"], spec)
    path = save_model(model, tmp_path, "state_dict", None, stem="pruned")
    assert path == tmp_path / "pruned.safetensors"
    meta = json.loads((tmp_path / "pruned.json").read_text())
    assert meta["architecture"] == "prunekit/digits_cnn"
    assert meta["kwargs"] == {"num_classes": 10, "width": 16}
    rebuilt = DigitsCNN(**meta["kwargs"]).eval()
    rebuilt.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model.module(x), atol=1e-6)


def test_export_input_keeps_finetuned_weights(files: dict[str, Path], x: torch.Tensor, tmp_path: Path) -> None:
    model = load_model(files["export"], ModelSpec())
    model.set_train(True)  # a no-op for export programs, must not raise
    before = {k: v.detach().clone() for k, v in model.module.named_parameters()}
    _prune_and_step(model, x)
    path = save_model(model, tmp_path, "export", None)
    program = _plain_export(path)
    saved = program.state_dict
    current = dict(model.module.named_parameters())
    assert set(current) <= set(saved)
    for name, value in current.items():
        assert torch.equal(saved[name], value.detach()), name
    assert not torch.equal(saved["classifier.1.weight"], before["classifier.1.weight"])
    assert (saved["classifier.1.weight"][:, :256] == 0).all()
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model.module(x), atol=1e-6)


def test_export_input_with_changed_shapes_is_exported_again(
    files: dict[str, Path], x: torch.Tensor, tmp_path: Path
) -> None:
    model = load_model(files["export"], ModelSpec())
    model.module = DigitsCNN(width=8).eval()  # what structural pruning does: fewer channels
    notes: list[str] = []
    path = save_model(model, tmp_path, "export", None, notes=notes)
    assert any("exported again" in n for n in notes)
    assert _plain_export(path).state_dict["features.0.weight"].shape[0] == 8


def test_torchscript_input_keeps_modified_weights(files: dict[str, Path], x: torch.Tensor, tmp_path: Path) -> None:
    model = load_model(files["torchscript"], ModelSpec())
    model.set_train(True)
    _prune_and_step(model, x)
    model.set_train(False)
    path = save_model(model, tmp_path, "torchscript", None)
    reloaded = _plain_torchscript(path)
    assert not reloaded.training
    with torch.no_grad():
        assert torch.allclose(reloaded(x), model.module(x), atol=1e-6)
    saved = dict(reloaded.named_parameters())["classifier.1.weight"]
    assert (saved[:, :256] == 0).all()


class _Unscriptable(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.lin(t.flatten(1)) for t in x.split(1, dim=1)]
        return sum(p * 1.0 for p in parts)  # generator expressions do not script


def test_unscriptable_module_is_traced_and_says_so(x: torch.Tensor, tmp_path: Path) -> None:
    model = LoadedModel(module=_Unscriptable().eval(), format="state_dict")
    notes: list[str] = []
    path = save_model(model, tmp_path, "torchscript", x[:2], notes=notes)
    assert any("torch.jit.trace because torch.jit.script failed" in n for n in notes)
    with torch.no_grad():
        assert torch.allclose(_plain_torchscript(path)(x), model.module(x), atol=1e-6)
    with pytest.raises(UnsupportedError, match="tracing needs an example input"):
        save_model(model, tmp_path, "torchscript", None)


def test_writes_atomically_and_replaces(files: dict[str, Path], x: torch.Tensor, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"old")
    model = load_model(files["safetensors"], DIGITS)
    save_model(model, tmp_path, "torchscript", None)
    save_model(model, tmp_path, "state_dict", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt", "model.safetensors"]
    assert (tmp_path / "model.pt").read_bytes()[:2] == b"PK"


def test_failed_save_leaves_no_partial_file(x: torch.Tensor, tmp_path: Path) -> None:
    model = LoadedModel(module=_Unscriptable().eval(), format="state_dict")
    with pytest.raises(UnsupportedError):
        save_model(model, tmp_path, "torchscript", None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["torchscript", "export", "safetensors"])
def test_clone_is_independent(files: dict[str, Path], x: torch.Tensor, key: str) -> None:
    model = load_model(files[key], DIGITS)
    copy = model.clone()
    with torch.no_grad():
        reference = model.module(x).clone()
        for p in copy.module.parameters():
            p.zero_()
        assert torch.equal(model.module(x), reference)
        assert not torch.equal(copy.module(x), reference)
    assert copy.format == model.format and copy.supports_train_mode == model.supports_train_mode
