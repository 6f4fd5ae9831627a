"""Measure one model on the job's data and sample: metrics, size, FLOPs; latency of two models side by side."""

from __future__ import annotations

import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from prunekit.spec import ModelSpec
from prunekit.spec.job import LatencySpec
from prunekit.spec.report import LatencyStats, PhaseMetrics, RuntimeLatency, SizeStats, SpeedupStats
from worker.engine.evaluation.flops import FLOPS_METHOD, count_flops
from worker.engine.evaluation.language import lm_split_metrics
from worker.engine.evaluation.latency import latency_stats, speedup_of, time_interleaved
from worker.engine.evaluation.metrics import predict_features, predict_logits, split_metrics
from worker.engine.evaluation.sparsity import count_params
from worker.engine.job_state import JobState
from worker.engine.models.calling import batch_of, inputs_to
from worker.engine.models.handle import LoadedModel
from worker.engine.models.loading import load_model
from worker.engine.models.saving import save_model
from worker.engine.runtimes import onnx_latency, pytorch_latency, wanted_runtimes
from worker.engine.tasks import EvalTask


@dataclass
class Measurement:
    """Everything measured on one model (before or after)."""

    metrics: PhaseMetrics | None
    val_logits: torch.Tensor | None
    train_logits: torch.Tensor | None
    size: SizeStats
    latency: LatencyStats | None = None  # set by time_both, which times before and after together
    speedup: SpeedupStats | None = None  # on `after`: set by time_both
    speedup_vs_input: SpeedupStats | None = None  # on `after`, when the artifact's format differs from the upload's
    runtimes: list[RuntimeLatency] | None = None  # on `after`: set by time_both, one row per runtime timed


def phase_metrics(
    state: JobState, model: LoadedModel
) -> tuple[PhaseMetrics | None, torch.Tensor | None, torch.Tensor | None]:
    if state.data is None:
        return None, None, None
    bs, fixed = state.spec.evaluation.batch_size, model.fixed_batch_size
    if state.task == EvalTask.CAUSAL_LM:
        return lm_phase_metrics(state, model), None, None
    if state.task == EvalTask.FEATURE_EXTRACTION:
        train_f = predict_features(model.module, state.data.train_inputs(), bs, state.device, fixed)
        return None, train_f, predict_features(model.module, state.data.val_inputs(), bs, state.device, fixed)
    train_logits = predict_logits(model.module, state.data.train_inputs(), bs, state.device, fixed)
    val_logits = predict_logits(model.module, state.data.val_inputs(), bs, state.device, fixed)
    if not state.data.labelled:
        return None, train_logits, val_logits
    train = split_metrics(train_logits, state.data.y_train)
    val = split_metrics(val_logits, state.data.y_val)
    gap = train.accuracy - val.accuracy if train.accuracy is not None and val.accuracy is not None else None
    return PhaseMetrics(train=train, val=val, gap=gap), train_logits, val_logits


def lm_phase_metrics(state: JobState, model: LoadedModel) -> PhaseMetrics:
    """Token-weighted next-token loss and perplexity on both splits; loss_gap is val minus train."""
    assert state.data is not None
    bs = model.fixed_batch_size or state.spec.evaluation.batch_size
    train = lm_split_metrics(model.module, state.data.train_inputs(), bs, state.device)
    val = lm_split_metrics(model.module, state.data.val_inputs(), bs, state.device)
    gap = val.loss - train.loss if val.loss is not None and train.loss is not None else None
    return PhaseMetrics(train=train, val=val, loss_gap=gap)


def file_sizes(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    return len(raw), len(zlib.compress(raw, 9))


def measure(state: JobState, model: LoadedModel, artifact: Path) -> Measurement:
    model.set_train(False)
    module = model.module
    metrics, train_logits, val_logits = phase_metrics(state, model)
    assert state.inputs is not None  # set right after loading
    per_call = model.fixed_batch_size or 1
    dense, effective = count_flops(module, inputs_to(batch_of(state.inputs, per_call), state.device))
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


def _runtime(model: LoadedModel) -> str:
    return "eager" if model.format in ("state_dict", "huggingface") else model.format


def same_format_baseline(state: JobState, original: LoadedModel, fmt: str, folder: Path) -> LoadedModel:
    """The original saved and reloaded in the artifact's format, so a speedup compares like with like."""
    if original.format == fmt:
        return original
    path = save_model(original, folder, fmt, state.inputs)  # type: ignore[arg-type]
    baseline = load_model(path, ModelSpec(format=fmt))
    state.place(baseline.module)
    baseline.set_train(False)
    return baseline


def _latency_spec(state: JobState, original: LoadedModel, compressed: LoadedModel) -> LatencySpec:
    spec = state.spec.evaluation.latency
    fixed = compressed.fixed_batch_size or original.fixed_batch_size
    if fixed and fixed != spec.batch_size:
        # A program exported with a static batch size runs only at that size.
        spec = spec.model_copy(update={"batch_size": fixed})
        state.notes.append(f"latency measured at the exported program's static batch size {fixed}")
    return spec


def time_both(
    state: JobState, original: LoadedModel, compressed: LoadedModel, before: Measurement, after: Measurement
) -> None:
    """Latency of the original and of the reloaded artifact, timed interleaved in the same format."""
    assert state.inputs is not None
    spec = _latency_spec(state, original, compressed)
    with tempfile.TemporaryDirectory(prefix="baseline-") as tmp:
        baseline = same_format_baseline(state, original, compressed.format, Path(tmp))
        modules = [baseline.module, compressed.module]
        if baseline is not original:
            modules.append(original.module)  # the original as uploaded, for the with-format-change figure
        times, threads = time_interleaved(modules, inputs_to(state.inputs, state.device), spec, state.device)
        onnx = None
        if "onnxruntime" in wanted_runtimes(state.spec):
            pair = (baseline.module, compressed.module)
            onnx = onnx_latency(state.spec, pair, state.inputs, spec, state.device, Path(tmp))
    runtime = _runtime(compressed)
    before.latency = _with_tokens(latency_stats(times[0], spec, state.device, threads), state, runtime)
    after.latency = _with_tokens(latency_stats(times[1], spec, state.device, threads), state, runtime)
    after.speedup = speedup_of(times[0], times[1], f"{runtime} vs {runtime}", spec.confidence)
    if len(times) == 3:
        after.speedup_vs_input = speedup_of(
            times[2], times[1], f"{_runtime(original)} (as uploaded) vs {runtime}", spec.confidence
        )
    after.runtimes = [pytorch_latency(state.spec, runtime, before.latency, after.latency, after.speedup)]
    if onnx is not None:
        after.runtimes.append(onnx)
        if onnx.note.startswith("not measured"):
            state.notes.append(onnx.note)
    _note_speedup(state, after)


def _with_tokens(stats: LatencyStats, state: JobState, runtime: str) -> LatencyStats:
    """The runtime, and for token-id inputs [batch, tokens] the sequence length and tokens per second."""
    assert state.inputs is not None
    first = next(iter(state.inputs.values()))
    update: dict[str, object] = {"runtime": runtime}
    if not first.is_floating_point() and first.dim() == 2 and stats.median_ms > 0:
        tokens = stats.batch_size * first.shape[1]
        update |= {"sequence_length": int(first.shape[1]), "tokens_per_s": tokens / (stats.median_ms / 1000)}
    return stats.model_copy(update=update)


def _note_speedup(state: JobState, after: Measurement) -> None:
    s, vs_input = after.speedup, after.speedup_vs_input
    if s is not None and s.median is not None and s.within_noise:
        state.notes.append(
            f"speedup {s.median:.2f}x is within the timing spread ({s.low:.2f}x to {s.high:.2f}x over {s.rounds} "
            "interleaved rounds): no speedup or slowdown can be claimed"
        )
    if vs_input is not None and vs_input.median is not None and s is not None and s.median is not None:
        state.notes.append(
            f"the artifact's format differs from the upload's: {s.median:.2f}x against the original in the same "
            f"format ({s.basis}), {vs_input.median:.2f}x against the original as uploaded ({vs_input.basis})"
        )
