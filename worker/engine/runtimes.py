"""Latency per runtime (PyTorch, ONNX Runtime) for the report, and the numbers the timing gates hold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from prunekit.spec import JobSpec
from prunekit.spec.job import LatencySpec
from prunekit.spec.pruning import LatencyRuntime
from prunekit.spec.report import LatencyStats, RuntimeLatency, SpeedupStats
from worker.engine.errors import UnsupportedError
from worker.engine.evaluation.latency import Sample, latency_stats, speedup_of
from worker.engine.evaluation.onnx_latency import time_onnx
from worker.engine.evaluation.speedup_possible import speedup_possible
from worker.engine.gates import Interval


def wanted_runtimes(spec: JobSpec) -> list[LatencyRuntime]:
    """pytorch, plus onnxruntime when evaluation.runtimes, output.also_onnx, a gate or target_speedup asks for it."""
    onnx = (
        "onnxruntime" in spec.evaluation.runtimes
        or spec.output.also_onnx
        or spec.gates.runtime == "onnxruntime"
        or getattr(spec.pruning, "target_speedup_runtime", "pytorch") == "onnxruntime"
    )
    return ["pytorch", "onnxruntime"] if onnx else ["pytorch"]


def pytorch_latency(
    spec: JobSpec, engine: str, before: LatencyStats, after: LatencyStats, speedup: SpeedupStats
) -> RuntimeLatency:
    """The PyTorch row: the numbers time_both measured, with what the method can do there."""
    possible, why = speedup_possible(spec.pruning, "pytorch")
    return RuntimeLatency(
        runtime="pytorch",
        engine=engine,
        before=before,
        after=after,
        speedup=speedup.model_copy(update={"runtime": "pytorch"}),
        speedup_possible=possible,
        speedup_why=why,
    )


def onnx_latency(
    spec: JobSpec,
    modules: tuple[torch.nn.Module, torch.nn.Module],
    sample: Sample,
    latency: LatencySpec,
    device: torch.device,
    folder: Path,
) -> RuntimeLatency:
    """(before, after) exported to ONNX and timed interleaved in onnxruntime; a model that cannot be says why."""
    possible, why = speedup_possible(spec.pruning, "onnxruntime")
    try:
        timing = time_onnx(list(modules), sample, latency, device, folder)
    except UnsupportedError as exc:
        note = f"not measured on ONNX Runtime: {exc}"
        return RuntimeLatency(runtime="onnxruntime", engine="", speedup_possible=possible, speedup_why=why, note=note)
    before, after = (
        latency_stats(t, latency, device, timing.threads).model_copy(update={"runtime": "onnxruntime"})
        for t in timing.times
    )
    speedup = speedup_of(timing.times[0], timing.times[1], "onnxruntime vs onnxruntime", latency.confidence)
    return RuntimeLatency(
        runtime="onnxruntime",
        engine=timing.provider,
        before=before,
        after=after,
        speedup=speedup.model_copy(update={"runtime": "onnxruntime"}),
        speedup_possible=possible,
        speedup_why=why,
        note="both models exported to ONNX at the latency batch size, timed interleaved",
    )


@dataclass
class Timed:
    """What the latency and speedup gates hold for the runtime they name."""

    latency_ms: float | None = None
    latency_interval: Interval | None = None
    speedup: float | None = None
    speedup_interval: Interval | None = None
    why_missing: str = "not measured"


def timed_for_gates(runtime: LatencyRuntime, rows: list[RuntimeLatency]) -> Timed:
    """The median latency and speedup on `runtime`, with their intervals; why not when that runtime has none."""
    row = next((r for r in rows if r.runtime == runtime), None)
    if row is None or row.after is None:
        return Timed(why_missing=row.note if row is not None and row.note else f"not measured on {runtime}")
    out = Timed(latency_ms=row.after.median_ms)
    a = row.after
    if a.ci_low_ms is not None and a.ci_high_ms is not None and a.confidence is not None:
        out.latency_interval = Interval(a.ci_low_ms, a.ci_high_ms, a.confidence, runtime, a.repeats)
    s = row.speedup
    if s is not None and s.median is not None:
        out.speedup = s.median
        if s.ci_low is not None and s.ci_high is not None and s.confidence is not None:
            out.speedup_interval = Interval(s.ci_low, s.ci_high, s.confidence, runtime, s.rounds)
    return out
