"""Kind dry_run (issue 11): the prunable layers, the structural blockers, the expected sizes and the problems the
full job would hit, found in seconds without pruning anything or writing an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

from prunekit.spec import JobSpec
from prunekit.spec.report import DryRunProblemCode, DryRunReport, Report
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import InvalidModelError
from worker.engine.models.builtin import DigitsCNN
from worker.engine.models.sparse import write_sparse

Code = DryRunProblemCode
RESNET = {"architecture": "torchvision/resnet18", "input_shape": [3, 64, 64]}
DIGITS = {"architecture": "prunekit/digits_cnn"}


def _save(module: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return _save(torchvision.models.resnet18(weights=None), tmp_path_factory.mktemp("resnet") / "r18.safetensors")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return _save(DigitsCNN(), tmp_path_factory.mktemp("digits") / "digits.safetensors")


def _dry(tmp_path: Path, model: Path, spec: dict[str, Any], data: Path | None = None) -> tuple[Report, DryRunReport]:
    job = JobSpec.model_validate({**spec, "kind": "dry_run"})
    report = run_job(JobInputs(model, job, data), tmp_path / "out", isolate=False).report
    assert report.kind == "dry_run" and report.dry_run is not None
    return report, report.dry_run


def _npz(path: Path, x_shape: tuple[int, ...], classes: int = 10) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random(x_shape, dtype=np.float32), y_train=rng.integers(0, classes, x_shape[0]))
    return path


def _codes(dry: DryRunReport) -> list[DryRunProblemCode]:
    return [p.code for p in dry.problems]


def test_resnet18_mask_plan_lists_prunable_layers_and_writes_no_artifact(resnet18: Path, tmp_path: Path) -> None:
    report, dry = _dry(tmp_path, resnet18, {"model": RESNET, "pruning": {"method": "magnitude", "sparsity": 0.5}})
    assert dry.problems == [] and dry.forward_ok and dry.inputs_source == "spec"
    assert (dry.format, dry.container, dry.task, dry.architecture) == (
        "state_dict", "safetensors", "classification", "torchvision/resnet18",
    )  # fmt: skip
    assert [(i.name, i.shape) for i in dry.inputs] == [("x", [1, 3, 64, 64])]
    layers = {row.name: row for row in dry.prunable}
    assert len(layers) == 20 and "fc.weight" not in layers and dry.classifier == ["fc.bias", "fc.weight"]
    assert (layers["conv1.weight"].params, layers["conv1.weight"].params_after) == (9408, 4704)
    est = dry.expected
    assert est is not None and est.params_before == 11_689_512
    assert est.params_before - est.params_after == sum(r.params - r.params_after for r in dry.prunable)
    assert est.macs_before is not None and est.macs_after is not None and est.macs_after < 0.6 * est.macs_before
    assert est.file_bytes_before == est.file_bytes_after == resnet18.stat().st_size  # zeros are stored densely
    assert dry.output_format == "state_dict" and dry.output_formats[0] == "state_dict"
    assert {"torchscript", "export"} <= set(dry.output_formats) and "huggingface" not in dry.output_formats
    assert report.artifact_name is None and not list((tmp_path / "out").glob("model*"))


def test_resnet18_structural_expects_fewer_macs_and_parameters(resnet18: Path, tmp_path: Path) -> None:
    spec = {"model": RESNET, "pruning": {"method": "structural", "channel_sparsity": 0.5}}
    _, dry = _dry(tmp_path, resnet18, spec)
    assert dry.problems == [] and dry.structural_blockers == []
    est = dry.expected
    assert est is not None and est.macs_before is not None and est.macs_after is not None
    assert est.macs_after < 0.5 * est.macs_before and est.params_after < 0.5 * est.params_before
    assert est.file_bytes_after is not None and est.file_bytes_after < est.file_bytes_before
    layers = {row.name: row for row in dry.prunable}
    assert layers["layer1.0.conv1"].params_after == layers["layer1.0.conv1"].params // 4  # in and out halved
    assert dry.output_format == "torchscript"  # a smaller state dict needs a self-describing format


def test_channel_shuffle_is_listed_as_a_structural_blocker(tmp_path: Path) -> None:
    model = _save(torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10), tmp_path / "shuffle.safetensors")
    arch = {"architecture": "torchvision/shufflenet_v2_x0_5", "kwargs": {"num_classes": 10}}
    spec = {"model": {**arch, "input_shape": [3, 64, 64]}, "pruning": {"method": "structural"}}
    _, dry = _dry(tmp_path, model, spec)
    assert _codes(dry) == [Code.STRUCTURAL_BLOCKED] and dry.forward_ok
    [blocker] = dry.structural_blockers
    assert "channel shuffle" in blocker.message and "mask-based" in blocker.message
    assert dry.prunable == [] and dry.expected is None


def test_torchscript_input_is_a_structural_blocker(tmp_path: Path) -> None:
    path = tmp_path / "digits.pt"
    torch.jit.save(torch.jit.script(DigitsCNN().eval()), str(path))
    _, dry = _dry(tmp_path, path, {"model": {"input_shape": [1, 8, 8]}, "pruning": {"method": "structural"}})
    assert dry.format == "torchscript" and _codes(dry) == [Code.STRUCTURAL_BLOCKED]
    assert "TorchScript models cannot be pruned structurally" in dry.structural_blockers[0].message


def test_missing_input_shape_without_data_is_a_problem(digits: Path, tmp_path: Path) -> None:
    _, dry = _dry(tmp_path, digits, {"model": DIGITS})
    assert _codes(dry) == [Code.MISSING_INPUTS] and "model.input_shape is required" in dry.problems[0].message
    assert not dry.forward_ok and dry.inputs == []
    assert dry.prunable  # the plan needs no sample; its MACs do
    assert dry.expected is not None and dry.expected.macs_before is None


def test_data_whose_shape_differs_from_input_shape(digits: Path, tmp_path: Path) -> None:
    data = _npz(tmp_path / "small.npz", (20, 1, 6, 6))
    _, dry = _dry(tmp_path, digits, {"model": {**DIGITS, "input_shape": [1, 8, 8]}}, data)
    assert _codes(dry) == [Code.INPUT_MISMATCH]
    assert "[1, 8, 8] does not match the data's sample shape [1, 6, 6]" in dry.problems[0].message
    assert dry.forward_ok and dry.inputs_source == "spec"  # the rest is still checked on the declared inputs


def test_data_the_model_cannot_take(digits: Path, tmp_path: Path) -> None:
    data = _npz(tmp_path / "rgb.npz", (20, 3, 8, 8))
    _, dry = _dry(tmp_path, digits, {"model": DIGITS}, data)
    assert _codes(dry) == [Code.FORWARD_FAILED] and "cannot run on the data's inputs" in dry.problems[0].message
    assert not dry.forward_ok


def test_labels_beyond_the_outputs_and_calibration_without_data(digits: Path, tmp_path: Path) -> None:
    data = _npz(tmp_path / "many.npz", (40, 1, 8, 8), classes=30)
    _, dry = _dry(tmp_path / "labels", digits, {"model": DIGITS}, data)
    assert _codes(dry) == [Code.OUTPUTS_MISMATCH] and "labels must be < 10" in dry.problems[0].message
    _, dry = _dry(
        tmp_path / "wanda", digits, {"model": {**DIGITS, "input_shape": [1, 8, 8]}, "pruning": {"method": "wanda"}}
    )
    assert _codes(dry) == [Code.NEEDS_DATA] and dry.prunable


def test_a_model_that_cannot_load_fails_the_dry_run(tmp_path: Path) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(b"not a model at all" * 10)
    with pytest.raises(InvalidModelError):
        _dry(tmp_path, path, {"model": {"input_shape": [1, 8, 8]}})


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GQA causal LM (4 query heads, 2 key/value groups) as a checkpoint archive."""
    import transformers

    from tests.worker.engine.huggingface import builders

    folder = tmp_path_factory.mktemp("llama")
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder / "tiny-llama")
    return builders.archive(folder / "tiny-llama", folder / "llama.tar", "tar")


def test_gqa_transformer_with_an_illegal_head_ratio_names_the_legal_ones(tiny_llama: Path, tmp_path: Path) -> None:
    spec = {"data": {"seq_len": 8}, "pruning": {"method": "transformer_structural", "attention_heads": 0.25}}
    _, dry = _dry(tmp_path, tiny_llama, spec)
    assert dry.format == "huggingface" and dry.task == "causal_lm" and dry.forward_ok
    assert Code.STRUCTURAL_BLOCKED in _codes(dry)
    [blocker] = dry.structural_blockers
    assert blocker.legal_ratios == [0.5]  # 2 key/value groups of 2 heads: only a whole group can go
    assert "0.5" in blocker.message
    assert dry.expected is None


def test_legal_transformer_widths_come_with_their_parameter_count(tiny_llama: Path, tmp_path: Path) -> None:
    import transformers

    ratios = {"attention_heads": 0.5, "mlp": 0.5}
    spec = {"data": {"seq_len": 8}, "pruning": {"method": "transformer_structural", **ratios}}
    _, dry = _dry(tmp_path, tiny_llama, spec)
    assert dry.problems == [] and dry.expected is not None
    est = dry.expected
    # what the rewritten config builds: 1 key/value group of 2 heads, 32 MLP channels
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
    )  # fmt: skip
    with torch.device("meta"):
        want = sum(p.numel() for p in transformers.LlamaForCausalLM(cfg).parameters())
    assert est.params_after == want < est.params_before
    assert est.file_bytes_after is not None and est.file_bytes_after < est.file_bytes_before


def test_sparse_output_expects_the_size_the_sparse_file_has(resnet18: Path, tmp_path: Path) -> None:
    spec = {"model": RESNET, "pruning": {"method": "magnitude", "sparsity": 0.9}}
    _, dense_dry = _dry(tmp_path / "dense", resnet18, spec)
    _, dry = _dry(tmp_path / "sparse", resnet18, {**spec, "output": {"format": "sparse_state_dict"}})
    assert dry.expected is not None and dense_dry.expected is not None
    assert dense_dry.expected.file_bytes_after == resnet18.stat().st_size  # zeros stored densely
    # the same layers at the same rates, really written: the estimate is an upper bound, and not a loose one
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(load_file(str(resnet18)))
    planned = {row.name: 1 - row.params_after / row.params for row in dry.prunable}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in planned:
                cut = param.abs().flatten().kthvalue(round(param.numel() * planned[name])).values
                param.masked_fill_(param.abs() <= cut, 0.0)
    write_sparse(model.state_dict(), tmp_path / "m.sparse.safetensors", {})
    written = (tmp_path / "m.sparse.safetensors").stat().st_size
    assert written <= dry.expected.file_bytes_after <= 1.35 * written
    assert dry.expected.file_bytes_after < 0.2 * resnet18.stat().st_size  # fc (the classifier) stays dense


def test_a_parameter_budget_is_searched_without_data(tiny_llama: Path, tmp_path: Path) -> None:
    budget = {"attention_heads": 0.5, "mlp": 0.75, "target_params": 0.9}
    _, dry = _dry(
        tmp_path, tiny_llama, {"data": {"seq_len": 8}, "pruning": {"method": "transformer_structural", **budget}}
    )
    assert dry.problems == [] and dry.expected is not None
    assert dry.expected.params_after <= 0.9 * dry.expected.params_before
    timed_report, timed = _dry(tmp_path / "t", tiny_llama, {"data": {"seq_len": 8}, "pruning": {
        "method": "transformer_structural", "attention_heads": 0.5, "target_speedup": 1.2}})  # fmt: skip
    assert timed.expected is None and any("target_speedup" in n for n in timed_report.notes)
