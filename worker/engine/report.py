"""Assemble the report of a compress job from what was measured."""

from __future__ import annotations

from pathlib import Path

from prunekit.spec.report import Fidelity, Report, SparsityStats
from worker.engine.data import Dataset
from worker.engine.environment import describe_environment
from worker.engine.evaluation.metrics import feature_fidelity, fidelity
from worker.engine.gates import Measured, evaluate_gates, overall_status
from worker.engine.job_state import JobState
from worker.engine.measure import Measurement
from worker.engine.models.handle import LoadedModel
from worker.engine.runtimes import timed_for_gates
from worker.engine.tasks import EvalTask
from worker.engine.training.finetune import FinetuneResult


def fidelity_of(state: JobState, before: Measurement, after: Measurement) -> Fidelity | None:
    if before.val_logits is None or after.val_logits is None:
        return None
    if state.task == EvalTask.FEATURE_EXTRACTION:
        return feature_fidelity(before.val_logits, after.val_logits, "val")
    return fidelity(before.val_logits, after.val_logits, "val")


def data_summary(data: Dataset | None) -> dict[str, object]:
    if data is None:
        return {"given": False, "note": "no data: accuracy and fidelity were not measured"}
    return {
        "given": True,
        "labelled": data.labelled,
        "train_samples": len(data.x_train),
        "val_samples": len(data.x_val),
        "split": data.split,
        "sample_shape": list(data.sample_shape),
        **({"classes": data.class_names} if data.class_names is not None else {}),  # image folders: label i's name
    }


def _perplexity_increase(before: Measurement, after: Measurement) -> float | None:
    """Validation perplexity after / before - 1 (causal LMs), e.g. 0.05 for 5% higher."""
    b = before.metrics.val.perplexity if before.metrics else None
    a = after.metrics.val.perplexity if after.metrics else None
    return a / b - 1 if a is not None and b is not None and b > 0 else None


def assemble_report(
    state: JobState,
    model: LoadedModel,
    out_fmt: str,
    artifact: Path,
    before: Measurement,
    after: Measurement,
    sparsity: SparsityStats,
    result: FinetuneResult,
) -> Report:
    spec = state.spec
    drop = None
    if (
        before.metrics
        and after.metrics
        and before.metrics.val.accuracy is not None
        and after.metrics.val.accuracy is not None
    ):
        drop = before.metrics.val.accuracy - after.metrics.val.accuracy
    assert before.latency is not None and after.latency is not None
    # The paired-rounds median (worker/engine/evaluation/latency.py), same format on both sides.
    speedup = after.speedup.median if after.speedup is not None else None
    why = (
        "not measured: no labelled data was given" if state.data is None or not state.data.labelled else "not measured"
    )
    # The latency and speedup gates hold the numbers of the runtime they name, with their intervals.
    timed = timed_for_gates(spec.gates.runtime, after.runtimes or [])
    measured = Measured(
        accuracy_drop=drop,
        sparsity=sparsity.global_sparsity,
        latency_ms=timed.latency_ms,
        artifact_bytes=after.size.artifact_bytes,
        speedup=timed.speedup,
        generalization_gap=after.metrics.gap if after.metrics else None,
        perplexity_increase=_perplexity_increase(before, after),
        why_missing=why,
        latency_interval=timed.latency_interval,
        speedup_interval=timed.speedup_interval,
        why_latency_missing=timed.why_missing,
    )
    gates = evaluate_gates(spec.gates, measured)
    return Report(
        kind=spec.kind,
        status=overall_status(gates),
        spec=spec.model_dump(mode="json"),
        seed=spec.seed,
        input_format=model.format,
        output_format=out_fmt,
        artifact_name=artifact.name,
        data=data_summary(state.data),
        notes=[*(state.data.notes if state.data is not None else []), *state.notes],
        before=before.metrics,
        after=after.metrics,
        accuracy_drop=drop,
        fidelity=fidelity_of(state, before, after),
        sparsity=sparsity,
        size_before=before.size,
        size_after=after.size,
        latency_before=before.latency,
        latency_after=after.latency,
        speedup=speedup,
        speedup_stats=after.speedup,
        speedup_vs_input=after.speedup_vs_input,
        runtimes=after.runtimes or [],
        history=result.history,
        gates=gates,
        stage_seconds=state.stage_seconds,
        environment=describe_environment(state.device, state.device.type == "cuda"),
        extra={"best_epoch": result.best_epoch, "stopped_early": result.stopped_early},
    )
