"""End to end: a masked model's min_speedup 1.0 gate, and latency on ONNX Runtime beside PyTorch."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit.spec import JobSpec
from worker.engine.api import JobInputs, run_job


def test_an_unstructured_jobs_speedup_gate_follows_its_interval_on_both_runtimes(
    torchscript_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    # A mask does not change the compute: the true speedup is 1.0x, so min_speedup 1.0 sits on the truth.
    spec = JobSpec.model_validate(
        {
            "pruning": {"method": "magnitude", "sparsity": 0.5},
            "finetune": {"epochs": 0},
            "evaluation": {"latency": {"repeats": 30, "warmup": 3}, "runtimes": ["pytorch", "onnxruntime"]},
            "gates": {"min_speedup": 1.0, "min_sparsity": 0.4},
        }
    )
    report = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False).report
    gate = next(g for g in report.gates if g.name == "min_speedup")
    low, high = gate.interval_low, gate.interval_high
    assert low is not None and high is not None and gate.runtime == "pytorch" and gate.confidence is not None
    assert report.speedup_stats is not None and (low, high) == (
        report.speedup_stats.ci_low,
        report.speedup_stats.ci_high,
    )
    # Whatever the noise did, the outcome is the interval's, never the median's coin flip.
    if low < 1.0 < high:
        assert gate.outcome == "inconclusive" and report.status == "inconclusive" and "straddles" in gate.reason
    elif low >= 1.0:
        assert gate.outcome == "passed" and report.status == "passed"
    else:
        assert gate.outcome == "failed" and report.status == "gate_missed"
    rows = {r.runtime: r for r in report.runtimes}
    assert set(rows) == {"pytorch", "onnxruntime"}
    assert rows["pytorch"].after == report.latency_after and rows["pytorch"].engine == "torchscript"
    onnx = rows["onnxruntime"]
    assert onnx.engine == "CPUExecutionProvider", onnx.note
    assert onnx.before is not None and onnx.after is not None and onnx.after.runtime == "onnxruntime"
    assert onnx.after.repeats == 30 and onnx.after.ci_low_ms is not None
    assert onnx.speedup is not None and onnx.speedup.rounds == 30 and onnx.speedup.runtime == "onnxruntime"
    assert all(r.speedup_possible is False and "sparse kernel" in r.speedup_why for r in rows.values())


def test_target_speedup_on_onnxruntime_times_both_models_exported() -> None:
    pytest.importorskip("onnxruntime")
    import copy

    import torch

    from prunekit.spec.job import LatencySpec
    from worker.engine.evaluation.onnx_latency import onnx_interleaved_speedup
    from worker.engine.models.builtin import TinyResNet

    model = TinyResNet(num_classes=10).eval()
    measure = onnx_interleaved_speedup(torch.randn(1, 1, 8, 8), LatencySpec(repeats=20, warmup=3), torch.device("cpu"))
    ratio, before, after = measure(model, copy.deepcopy(model))
    # The same model on both sides: about 1x, and seconds per call (not milliseconds).
    assert 0.7 < ratio < 1.4 and 0 < before < 1 and 0 < after < 1
