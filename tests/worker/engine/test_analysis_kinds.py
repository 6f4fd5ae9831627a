"""Sensitivity, sweep and search jobs on digits, run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit.spec import JobSpec
from tests.support.digits import accuracy, digits_arrays
from worker.engine.analysis.sensitivity import recommend
from worker.engine.api import JobInputs, run_job

BASE = {
    "model": {"architecture": "prunekit/digits_cnn"},
    "pruning": {"method": "magnitude", "sparsity": 0.5},
    "finetune": {"epochs": 1, "batch_size": 128},
    "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
}


def test_recommendation_meets_target_with_least_sensitive_layers() -> None:
    layers = [
        {"name": "a", "params": 100, "drops": [0.0, 0.0, 0.01]},
        {"name": "b", "params": 100, "drops": [0.0, 0.2, 0.5]},
    ]
    rec = recommend(layers, [0.3, 0.6, 0.9], 0.6)
    assert rec["reachable"] and rec["achieved"] >= 0.6
    assert rec["overrides"]["a"] > rec["overrides"]["b"]


def test_sensitivity_job(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    spec = JobSpec.model_validate({**BASE, "kind": "sensitivity", "sensitivity": {"levels": [0.5, 0.9, 0.99]}})
    out = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False)
    sens = out.report.sensitivity
    assert sens is not None and out.artifact_path is None
    assert {layer["name"] for layer in sens["layers"]} == {
        "features.0.weight",
        "features.3.weight",
        "classifier.1.weight",
    }
    for layer in sens["layers"]:
        assert layer["drops"][-1] >= layer["drops"][0] - 0.02  # more pruning hurts at least as much, roughly
    # The recommendation plugs straight into a compress spec.
    compress = JobSpec.model_validate(
        {
            **BASE,
            "pruning": {"method": "magnitude", "scope": "layerwise", "overrides": sens["recommendation"]["overrides"]},
        }
    )
    report = run_job(JobInputs(torchscript_model, compress, digits_npz), tmp_path / "c", isolate=False).report
    assert report.sparsity.global_sparsity > 0


def test_sweep_job_marks_pareto_front(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {**BASE, "kind": "sweep", "sweep": {"sparsities": [0.5, 0.9], "regularizers": {"none": {}, "l1": {"l1": 1e-5}}}}
    )
    report = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False).report
    assert len(report.trials) == 4 and any(t.pareto for t in report.trials)
    assert all(t.gap is not None for t in report.trials)
    assert (tmp_path / report.artifact_name).exists()  # type: ignore[operator]


@pytest.mark.slow
def test_search_meets_tolerance_on_reevaluation(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    import torch

    spec = JobSpec.model_validate(
        {
            **BASE,
            "kind": "search",
            "finetune": {"epochs": 2, "batch_size": 64},
            "search": {"tolerance": 0.02, "low": 0.5, "high": 0.99, "max_trials": 4},
        }
    )
    out = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False)
    report = out.report
    assert report.extra["found"] and 1 <= len(report.trials) <= 4
    arrays = digits_arrays()
    assert out.artifact_path is not None
    module = torch.jit.load(str(out.artifact_path))
    independent = accuracy(module, arrays["x_val"], arrays["y_val"])
    assert report.before is not None and report.before.val.accuracy is not None
    assert report.before.val.accuracy - independent <= 0.02 + 1e-9
    assert report.sparsity.global_sparsity >= 0.5
