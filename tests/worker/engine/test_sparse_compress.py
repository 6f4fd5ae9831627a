"""Compress jobs with output.format sparse_state_dict: the artifact restores the pruned weights bit for bit.

Each job is compared with the same job (same seed, no fine-tuning) written densely: the README loader's state_dict
of the sparse artifact must equal the dense artifact's weights byte for byte, for every kind of input.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from tests.worker.engine.models.test_sparse import assert_bit_identical, readme_loader
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import UnsupportedError


def _spec(fmt: str, **overrides: object) -> JobSpec:
    base: dict[str, object] = {
        "model": {"architecture": "prunekit/digits_cnn", "input_shape": [1, 8, 8]},
        "pruning": {"method": "magnitude", "sparsity": 0.9},
        "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
        "output": {"format": fmt},
    }
    base.update(overrides)
    return JobSpec.model_validate(base)


def _run(model: Path, spec: JobSpec, out: Path) -> tuple[Report, Path]:
    outputs = run_job(JobInputs(model, spec), out, isolate=False)
    assert outputs.artifact_path is not None
    return outputs.report, outputs.artifact_path


def load_sparse(path: Path) -> dict[str, torch.Tensor]:
    """The README's loader, run as documented."""
    scope: dict[str, object] = {}
    exec(readme_loader(), scope)
    return scope["load_sparse"](str(path))  # type: ignore[no-any-return,operator]


def test_state_dict_input_is_self_describing_and_smaller(state_dict_model: Path, tmp_path: Path) -> None:
    dense_report, dense = _run(state_dict_model, _spec("state_dict"), tmp_path / "dense")
    report, sparse = _run(state_dict_model, _spec("sparse_state_dict"), tmp_path / "sparse")
    assert sparse.name == "model.sparse.safetensors" and report.output_format == "sparse_state_dict"
    restored = load_sparse(sparse)
    assert_bit_identical(restored, load_file(str(dense)))
    assert report.size_after.artifact_bytes < 0.5 * dense_report.size_after.artifact_bytes
    # "after" was measured on the restored artifact: the same weights give the same counts
    assert report.size_after.params_nonzero == dense_report.size_after.params_nonzero
    assert report.sparsity.global_sparsity == pytest.approx(0.9, abs=0.01)


@pytest.mark.parametrize("fixture", ["torchscript_model", "export_model"])
def test_program_inputs_get_their_weights_back(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    upload: Path = request.getfixturevalue(fixture)
    spec = _spec("same", model={"input_shape": [1, 8, 8]})
    _, dense = _run(upload, spec, tmp_path / "dense")
    report, sparse = _run(upload, _spec("sparse_state_dict", model={"input_shape": [1, 8, 8]}), tmp_path / "sparse")
    if fixture == "torchscript_model":
        model, want = torch.jit.load(str(upload)), torch.jit.load(str(dense)).state_dict()
    else:
        model, want = torch.export.load(str(upload)).module(), torch.export.load(str(dense)).module().state_dict()
    model.load_state_dict(load_sparse(sparse))  # the upload + the sparse weights = the pruned model
    assert_bit_identical(model.state_dict(), want)
    assert any("holds the weights only" in n for n in report.notes)
    assert report.input_format == {"torchscript_model": "torchscript", "export_model": "export"}[fixture]


def test_structural_pruning_refuses_it(state_dict_model: Path, tmp_path: Path) -> None:
    spec = _spec("sparse_state_dict", pruning={"method": "structural", "channel_sparsity": 0.5})
    with pytest.raises(UnsupportedError, match="sparse_state_dict' is for mask pruning"):
        run_job(JobInputs(state_dict_model, spec), tmp_path, isolate=False)
