"""The quantized artifact measured as reloaded: metrics on its device, size on disk, latency on its runtime."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from prunekit.spec.report import RuntimeLatency
from worker.engine.evaluation.latency import latency_stats, speedup_of, time_calls
from worker.engine.evaluation.onnx_latency import onnx_session, open_session
from worker.engine.evaluation.speedup_possible import speedup_possible
from worker.engine.export_onnx import session_feed
from worker.engine.job_state import JobState
from worker.engine.measure import Measurement, file_sizes, phase_metrics, time_both
from worker.engine.models.calling import batch_of
from worker.engine.models.handle import LoadedModel
from worker.engine.quantization.base import Quantized


def measure_quantized(
    state: JobState, original: LoadedModel, q: Quantized, before: Measurement, finetuned: Measurement
) -> Measurement:
    """Measure the delivered artifact; re-times the dense model against it (before.latency is replaced)."""
    qstate = replace(state, device=q.device)  # shares notes and stage times with the job
    metrics, train_logits, val_logits = phase_metrics(qstate, q.model)
    raw, zipped = file_sizes(q.path)
    # The same weights, stored in fewer bits: parameter counts and FLOPs are the fine-tuned model's.
    size = finetuned.size.model_copy(update={"artifact_bytes": raw, "artifact_zipped_bytes": zipped})
    after = Measurement(metrics, val_logits, train_logits, size)
    if q.device != state.device:
        state.notes.append(
            f"the quantized artifact runs on the {q.device.type.upper()}: it and the original were timed there"
        )
    original.module.to(q.device)
    if q.runtime == "onnxruntime":
        _time_onnx(qstate, original, q, before, after)
    else:
        time_both(qstate, original, q.model, before, after)
    return after


def _time_onnx(state: JobState, original: LoadedModel, q: Quantized, before: Measurement, after: Measurement) -> None:
    """The original exported to float32 ONNX and the int8 model, timed interleaved on ONNX Runtime's CPU provider."""
    assert state.inputs is not None
    spec = state.spec.evaluation.latency
    if q.model.fixed_batch_size and q.model.fixed_batch_size != spec.batch_size:
        spec = spec.model_copy(update={"batch_size": q.model.fixed_batch_size})
    batch = {k: v.cpu() for k, v in batch_of(state.inputs, spec.batch_size).items()}
    threads = spec.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="dense-onnx-") as tmp:
        dense = onnx_session(original.module, batch, Path(tmp) / "dense.onnx", state.device, threads)
        int8 = open_session(q.path, threads)
        calls = [functools.partial(s.run, None, session_feed(s, batch)) for s in (dense, int8)]
        times = time_calls(calls, spec, lambda: None)
    before.latency, after.latency = (
        latency_stats(t, spec, state.device, threads).model_copy(update={"runtime": "onnxruntime"}) for t in times
    )
    speedup = speedup_of(times[0], times[1], "onnxruntime vs onnxruntime", spec.confidence)
    after.speedup = speedup.model_copy(update={"runtime": "onnxruntime"})
    possible, why = speedup_possible(state.spec.pruning, "onnxruntime")
    after.runtimes = [
        RuntimeLatency(
            runtime="pytorch",
            engine="",
            note="not measured: the delivered artifact is an ONNX model (int8_static_onnx)",
        ),
        RuntimeLatency(
            runtime="onnxruntime",
            engine="CPUExecutionProvider",
            before=before.latency,
            after=after.latency,
            speedup=after.speedup,
            speedup_possible=possible,
            speedup_why=why,
            note="the original exported to float32 ONNX against model.int8.onnx, timed interleaved",
        ),
    ]
