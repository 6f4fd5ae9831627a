"""Measure one model on the job's data and sample: metrics, size, FLOPs; latency of two models side by side."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from prunekit.spec.report import LatencyStats, PhaseMetrics, SizeStats
from worker.engine.evaluation.flops import FLOPS_METHOD, count_flops
from worker.engine.evaluation.latency import measure_latencies
from worker.engine.evaluation.metrics import predict_logits, split_metrics
from worker.engine.evaluation.sparsity import count_params
from worker.engine.job_state import JobState
from worker.engine.models.handle import LoadedModel


@dataclass
class Measurement:
    """Everything measured on one model (before or after)."""

    metrics: PhaseMetrics | None
    val_logits: torch.Tensor | None
    train_logits: torch.Tensor | None
    size: SizeStats
    latency: LatencyStats | None = None  # set by _time_both, which times before and after together


def phase_metrics(
    state: JobState, model: LoadedModel
) -> tuple[PhaseMetrics | None, torch.Tensor | None, torch.Tensor | None]:
    if state.data is None:
        return None, None, None
    bs, fixed = state.spec.evaluation.batch_size, model.fixed_batch_size
    train_logits = predict_logits(model.module, state.data.x_train, bs, state.device, fixed)
    val_logits = predict_logits(model.module, state.data.x_val, bs, state.device, fixed)
    if not state.data.labelled:
        return None, train_logits, val_logits
    train = split_metrics(train_logits, state.data.y_train)
    val = split_metrics(val_logits, state.data.y_val)
    gap = train.accuracy - val.accuracy if train.accuracy is not None and val.accuracy is not None else None
    return PhaseMetrics(train=train, val=val, gap=gap), train_logits, val_logits


def batch_of(sample: torch.Tensor, n: int) -> torch.Tensor:
    return sample.expand(n, *sample.shape[1:]).contiguous()


def file_sizes(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    return len(raw), len(zlib.compress(raw, 9))


def measure(state: JobState, model: LoadedModel, artifact: Path) -> Measurement:
    model.set_train(False)
    module = model.module
    metrics, train_logits, val_logits = phase_metrics(state, model)
    assert state.sample is not None  # set right after loading
    sample = state.sample.to(state.device)
    per_call = model.fixed_batch_size or 1
    dense, effective = count_flops(module, batch_of(sample, per_call))
    dense, effective = dense // per_call, effective // per_call
    total, nonzero = count_params(module)
    raw, zipped = file_sizes(artifact)
    size = SizeStats(
        params_total=total,
        params_nonzero=nonzero,
        flops_dense=dense,
        flops_effective=effective,
        flops_method=FLOPS_METHOD,
        artifact_bytes=raw,
        artifact_zipped_bytes=zipped,
    )
    return Measurement(metrics, val_logits, train_logits, size)


def time_both(
    state: JobState, original: LoadedModel, compressed: LoadedModel, before: Measurement, after: Measurement
) -> None:
    """Latency of the original and of the reloaded artifact, timed interleaved under the same load."""
    assert state.sample is not None
    spec = state.spec.evaluation.latency
    fixed = compressed.fixed_batch_size or original.fixed_batch_size
    if fixed and fixed != spec.batch_size:
        # A program exported with a static batch size runs only at that size.
        spec = spec.model_copy(update={"batch_size": fixed})
        state.notes.append(f"latency measured at the exported program's static batch size {fixed}")
    before.latency, after.latency = measure_latencies(
        [original.module, compressed.module], state.sample.to(state.device), spec, state.device
    )
