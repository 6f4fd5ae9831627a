"""Speedups compare like with like (the original timed in the artifact's format) and carry their spread."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save_file

from prunekit.spec import JobSpec
from worker.engine.api import JobInputs, run_job
from worker.engine.evaluation.latency import speedup_of
from worker.engine.models.builtin import TinyResNet


def test_identical_timings_read_as_one_within_noise() -> None:
    noise = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 1.0]
    s = speedup_of(noise, list(reversed(noise)), "torchscript vs torchscript")
    assert s.median == pytest.approx(1.0, abs=0.06) and s.low is not None and s.high is not None
    assert s.low <= 1.0 <= s.high and s.within_noise and s.rounds == len(noise)


def test_a_clear_speedup_is_not_noise() -> None:
    before = [2.0, 2.1, 1.9, 2.05, 1.95, 2.02]
    s = speedup_of(before, [1.0, 1.02, 0.99, 1.01, 1.0, 0.98], "eager vs eager")
    assert s.median == pytest.approx(2.0, abs=0.1) and s.low is not None and s.low > 1.5 and not s.within_noise


def test_a_masked_models_speedup_interval_contains_one(
    torchscript_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    # A mask does not change the compute: its true speedup is 1.0x and the report must not claim otherwise.
    spec = JobSpec.model_validate(
        {
            "pruning": {"method": "magnitude", "sparsity": 0.5},
            "finetune": {"epochs": 0},
            "evaluation": {"latency": {"repeats": 60, "warmup": 5}},
        }
    )
    report = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False).report
    s = report.speedup_stats
    assert s is not None and s.basis == "torchscript vs torchscript" and s.rounds == 60
    assert s.low is not None and s.high is not None and s.low <= 1.0 <= s.high and s.within_noise
    assert report.speedup == s.median and report.speedup_vs_input is None
    assert any("within the timing spread" in n for n in report.notes)
    assert report.latency_before is not None and report.latency_before.p25_ms is not None


def test_a_state_dict_job_is_timed_against_the_original_in_the_artifacts_format(
    digits_npz: Path, tmp_path: Path
) -> None:
    model = tmp_path / "tiny.safetensors"
    save_file(TinyResNet(num_classes=10).state_dict(), str(model))
    spec = JobSpec.model_validate(
        {
            "model": {"architecture": "prunekit/tiny_resnet"},
            "pruning": {"method": "structural", "channel_sparsity": 0.5},
            "finetune": {"epochs": 0},
            "evaluation": {"latency": {"repeats": 10, "warmup": 2}},
        }
    )
    report = run_job(JobInputs(model, spec, digits_npz), tmp_path / "out", isolate=False).report
    assert report.input_format == "state_dict" and report.output_format == "torchscript"
    assert report.speedup_stats is not None and report.speedup_stats.basis == "torchscript vs torchscript"
    assert report.latency_before is not None and report.latency_before.runtime == "torchscript"
    vs_input = report.speedup_vs_input
    assert vs_input is not None and vs_input.basis == "eager (as uploaded) vs torchscript"
    assert any("the artifact's format differs" in n for n in report.notes)
    # Nothing but the artifact and its sidecars is left in the output folder (the baseline went to a temp folder).
    assert not any(p.name.startswith("baseline") for p in (tmp_path / "out").iterdir())


def test_a_budget_search_times_each_candidate_beside_the_original() -> None:
    # Interleaved, a model against its own copy reads 1.0x: the budget search compares like this at every step.
    import copy

    import torch

    from prunekit.spec.job import LatencySpec
    from worker.engine.evaluation.latency import interleaved_speedup

    model = TinyResNet(num_classes=10).eval()
    measure = interleaved_speedup(torch.randn(1, 1, 8, 8), LatencySpec(repeats=40, warmup=3), torch.device("cpu"))
    ratio, before, after = measure(model, copy.deepcopy(model))
    assert 0.8 < ratio < 1.25 and before > 0 and after > 0
