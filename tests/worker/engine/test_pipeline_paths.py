"""Compress jobs without data, with unlabelled data, with gates missed, with bad overrides; all in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunekit.spec import JobSpec
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import InvalidSpecError, UnsafeModelError


def _spec(**overrides: object) -> JobSpec:
    base: dict[str, object] = {
        "model": {"architecture": "prunekit/digits_cnn"},
        "pruning": {"method": "magnitude", "sparsity": 0.7},
        "finetune": {"epochs": 1, "batch_size": 128},
        "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
    }
    base.update(overrides)
    return JobSpec.model_validate(base)


def test_without_data_prunes_only_and_says_so(torchscript_model: Path, tmp_path: Path) -> None:
    spec = _spec(model={"input_shape": [1, 8, 8]})
    report = run_job(JobInputs(torchscript_model, spec), tmp_path, isolate=False).report
    assert report.before is None and report.after is None and report.accuracy_drop is None
    assert any("accuracy was not measured" in n for n in report.notes)
    assert report.history == []
    assert abs(report.sparsity.global_sparsity - 0.7) < 0.005


def test_without_data_or_input_shape_is_an_actionable_error(torchscript_model: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpecError, match="input_shape is required"):
        run_job(JobInputs(torchscript_model, _spec()), tmp_path, isolate=False)


def test_unlabelled_data_measures_fidelity_and_distills(
    torchscript_model: Path, digits_unlabelled_npz: Path, tmp_path: Path
) -> None:
    report = run_job(JobInputs(torchscript_model, _spec(), digits_unlabelled_npz), tmp_path, isolate=False).report
    assert report.before is None and report.fidelity is not None
    assert 0.5 < report.fidelity.top1_agreement <= 1.0 and report.fidelity.kl_divergence >= 0
    assert any("distillation" in n for n in report.notes)
    assert report.history and report.history[0].train_accuracy is None


def test_gate_missed_is_reported_not_raised(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    spec = _spec(gates={"min_sparsity": 0.95, "max_accuracy_drop": 0.5})
    report = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False).report
    gates = {g.name: g for g in report.gates}
    assert report.status == "gate_missed"
    assert not gates["min_sparsity"].passed and gates["max_accuracy_drop"].passed


def test_override_matching_nothing(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    spec = _spec(pruning={"method": "magnitude", "sparsity": 0.5, "overrides": {"no.such.layer": 0.3}})
    with pytest.raises(InvalidSpecError, match=r"no\.such\.layer"):
        run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False)


def test_overrides_and_layerwise(state_dict_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    pruning = {"method": "magnitude", "scope": "layerwise", "sparsity": 0.5, "overrides": {"features.0": 0.25}}
    report = run_job(JobInputs(state_dict_model, _spec(pruning=pruning), digits_npz), tmp_path, isolate=False).report
    layers = {layer.name: layer for layer in report.sparsity.layers}
    assert layers["features.0.weight"].sparsity == pytest.approx(0.25, abs=0.01)
    assert layers["features.3.weight"].sparsity == pytest.approx(0.5, abs=0.01)


def test_deterministic_on_cpu(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    spec = _spec(finetune={"epochs": 2, "batch_size": 128})
    a = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path / "a", isolate=False).report
    b = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path / "b", isolate=False).report
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert a.after is not None and b.after is not None and a.after.val.accuracy == b.after.val.accuracy


def test_malicious_pickle_fails_in_the_sandbox_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, (f"touch {marker}",))

    model = tmp_path / "model.pt"
    torch.save({"weight": Evil()}, model)
    spec = _spec(model={"architecture": "prunekit/digits_cnn", "input_shape": [1, 8, 8]})
    with pytest.raises(UnsafeModelError, match=r"nothing was run|refused"):
        run_job(JobInputs(model, spec), tmp_path / "out")
    assert not marker.exists()


def test_gradual_schedule_reaches_target(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    pruning = {"method": "magnitude", "sparsity": 0.8, "schedule": {"kind": "gradual", "end_epoch": 2, "frequency": 2}}
    spec = _spec(pruning=pruning, finetune={"epochs": 3, "batch_size": 128})
    report = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False).report
    levels = [h.sparsity for h in report.history]
    assert levels == sorted(levels) and levels[0] < 0.8
    assert levels[-1] == pytest.approx(0.8) and abs(report.sparsity.global_sparsity - 0.8) < 0.005


def test_regularize_then_prune_phase_plan(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    finetune = {"epochs": 1, "regularize_epochs": 2, "batch_size": 128, "regularizers": {"l1": 1e-4, "l2": 1e-4}}
    spec = _spec(pruning={"method": "magnitude", "sparsity": 0.9}, finetune=finetune)
    report = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False).report
    assert [(h.epoch, h.phase) for h in report.history] == [(1, "regularize"), (2, "regularize"), (3, "finetune")]
    assert [h.sparsity for h in report.history] == [0.0, 0.0, pytest.approx(0.9)]
    assert any("regularize-then-prune" in n for n in report.notes)
    assert abs(report.sparsity.global_sparsity - 0.9) < 0.005


@pytest.mark.parametrize(
    ("pruning", "expected"),
    [
        ({"method": "nm", "n": 2, "m": 4, "exclude": ["features.0.weight"]}, 0.5),
        ({"method": "channel", "sparsity": 0.5, "norm": "l2"}, 0.5),
        ({"method": "random", "sparsity": 0.6}, 0.6),
    ],
)
def test_other_mask_methods_in_a_job(
    state_dict_model: Path, digits_npz: Path, tmp_path: Path, pruning: dict[str, object], expected: float
) -> None:
    report = run_job(JobInputs(state_dict_model, _spec(pruning=pruning), digits_npz), tmp_path, isolate=False).report
    assert abs(report.sparsity.global_sparsity - expected) < 0.02
    assert report.output_format == "state_dict"


def test_early_stopping_restores_best(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    # min_delta 1.0 cannot be beaten: epoch 1 is best, epoch 2 is stale, training stops and epoch 1 is restored.
    finetune = {"epochs": 5, "batch_size": 128, "early_stopping": {"patience": 1, "min_delta": 1.0}}
    report = run_job(JobInputs(torchscript_model, _spec(finetune=finetune), digits_npz), tmp_path, isolate=False).report
    assert report.extra["stopped_early"] is True and report.extra["best_epoch"] == 1
    assert len(report.history) == 2
    assert report.after is not None
    assert report.after.val.accuracy == pytest.approx(report.history[0].val_accuracy, abs=1e-9)


def test_diverging_fine_tuning_fails_with_advice(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    finetune = {"epochs": 3, "batch_size": 128, "optimizer": {"name": "sgd", "lr": 10.0}}
    with pytest.raises(InvalidSpecError, match="diverged"):
        run_job(JobInputs(torchscript_model, _spec(finetune=finetune), digits_npz), tmp_path, isolate=False)


def test_state_dict_input_written_as_torchscript_and_export(
    state_dict_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    for fmt, loader in (("torchscript", torch.jit.load), ("export", lambda p: torch.export.load(p).module())):
        spec = _spec(output={"format": fmt})
        out = run_job(JobInputs(state_dict_model, spec, digits_npz), tmp_path / fmt, isolate=False)
        assert out.report.output_format == fmt and out.artifact_path is not None
        module = loader(str(out.artifact_path))
        assert module(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_report_html_is_optional(torchscript_model: Path, digits_npz: Path, tmp_path: Path) -> None:
    # A sweep's trials skip it: only the sweep's own report is ever shown.
    inputs = JobInputs(torchscript_model, _spec(), digits_npz)
    without = run_job(inputs, tmp_path / "a", isolate=False, render_report=False)
    assert without.html_path is None and not (tmp_path / "a" / "report.html").exists()
    with_html = run_job(inputs, tmp_path / "b", isolate=False)
    assert with_html.html_path is not None and with_html.html_path.read_text().lower().startswith("<!doctype html>")
