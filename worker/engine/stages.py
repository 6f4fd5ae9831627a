"""The report's stages side by side: dense -> pruned -> fine-tuned (-> quantized), each as measured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prunekit.spec.report import SplitMetrics, StageName, StageRecord
from worker.engine.measure import Measurement


@dataclass
class StageInputs:
    """What the pipeline measured at each stage."""

    dense: Measurement  # the upload; its latency is the one timed against the delivered artifact
    pruned: SplitMetrics | None  # one validation pass before recovery (None: not measured)
    pruned_note: str
    fine_tuned: Measurement  # the float artifact as reloaded
    fine_tuned_artifact: Path
    fine_tuned_epochs: int  # 0: no fine-tuning ran, the pruned model is the fine-tuned stage
    quantized: Measurement | None = None
    quantized_artifact: Path | None = None


def _record(name: StageName, m: Measurement, artifact: str | None, note: str = "") -> StageRecord:
    lat = m.latency
    return StageRecord(
        name=name,
        val=m.metrics.val if m.metrics else None,
        train=m.metrics.train if m.metrics else None,
        artifact=artifact,
        artifact_bytes=m.size.artifact_bytes,
        params_total=m.size.params_total,
        params_nonzero=m.size.params_nonzero,
        latency_ms=lat.median_ms if lat else None,
        runtime=lat.runtime if lat else None,
        note=note,
    )


def _pruned(inp: StageInputs) -> StageRecord:
    if inp.fine_tuned_epochs == 0:
        same = _record("pruned", inp.fine_tuned, None, "no fine-tuning ran: the pruned model is the fine-tuned stage")
        return same.model_copy(update={"artifact_bytes": None, "latency_ms": None, "runtime": None})
    note = inp.pruned_note or "validation right after pruning, before fine-tuning (no file is written)"
    if inp.pruned is None:
        note = "not measured (no labelled validation data, or the method prunes while fine-tuning)"
    return StageRecord(name="pruned", val=inp.pruned, params_nonzero=None, note=note)


def stage_records(inp: StageInputs) -> list[StageRecord]:
    """One record per stage; the last one is the delivered artifact."""
    stages = [
        _record("dense", inp.dense, None, "the uploaded model"),
        _pruned(inp),
        _record("fine_tuned", inp.fine_tuned, inp.fine_tuned_artifact.name, "the float artifact as reloaded"),
    ]
    if inp.quantized is not None and inp.quantized_artifact is not None:
        stages.append(
            _record("quantized", inp.quantized, inp.quantized_artifact.name, "the quantized artifact as reloaded")
        )
    stages[-1].delivered = True
    return stages
