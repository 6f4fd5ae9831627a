"""ONNX Runtime latency: models exported to ONNX and timed interleaved, with the protocol of latency.py.

Each model is exported (and checked against PyTorch) by worker/engine/export_onnx.py at the latency batch
size, then run by onnxruntime: the CUDA provider when the job runs on a GPU and onnxruntime has it, else
the CPU provider with the threads PyTorch was timed with. Inputs are host arrays, so on CUDA every call
includes the copies to and from the GPU, as a plain `session.run` caller sees it.
"""

from __future__ import annotations

import copy
import functools
import importlib
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunekit.spec.job import LatencySpec
from worker.engine.evaluation.latency import Sample, SpeedupFn, speedup_of, time_calls
from worker.engine.export_onnx import export_onnx, session_feed
from worker.engine.models.calling import ModelInputs, batch_of


@dataclass
class OnnxTiming:
    """Milliseconds per call of each model, round by round, and where they ran."""

    times: list[list[float]]
    provider: str
    threads: int


def providers(available: Sequence[str], device: torch.device) -> list[str]:
    """CUDA first when the job runs on a GPU and onnxruntime offers it; the CPU provider always."""
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def onnx_session(module: torch.nn.Module, batch: ModelInputs, path: Path, device: torch.device, threads: int) -> Any:
    """Export `module` on `batch` to `path` (raises UnsupportedError when it cannot be) and open it."""
    cpu = module if device.type == "cpu" else copy.deepcopy(module).cpu()  # export_onnx checks on host tensors
    export_onnx(cpu, batch, path, n_checks=1)
    return open_session(path, threads, device)


def open_session(path: Path, threads: int | None, device: torch.device | None = None) -> Any:
    """An ONNX Runtime session of `path`: `device`'s execution provider (None: CPU), `threads` intra-op threads."""
    ort = importlib.import_module("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    chosen = providers(ort.get_available_providers(), device) if device is not None else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=chosen)


def time_onnx(
    modules: Sequence[torch.nn.Module], sample: Sample, spec: LatencySpec, device: torch.device, folder: Path
) -> OnnxTiming:
    """Export each module and time the sessions interleaved on a batch of `spec.batch_size` copies of `sample`."""
    batch = {k: v.cpu() for k, v in batch_of(sample, spec.batch_size).items()}
    threads = spec.threads or torch.get_num_threads()
    sessions = [onnx_session(m, batch, folder / f"timed-{i}.onnx", device, threads) for i, m in enumerate(modules)]
    feeds = [session_feed(s, batch) for s in sessions]
    calls = [functools.partial(s.run, None, f) for s, f in zip(sessions, feeds, strict=True)]
    # session.run returns host arrays, so each call has finished when it returns: nothing to synchronize.
    times = time_calls(calls, spec, lambda: None)
    return OnnxTiming(times, sessions[0].get_providers()[0], threads)


def onnx_interleaved_speedup(sample: Sample, spec: LatencySpec, device: torch.device) -> SpeedupFn:
    """(speedup, before s, after s) of a candidate against a reference, both exported and run in onnxruntime."""

    def measure(reference: torch.nn.Module, candidate: torch.nn.Module) -> tuple[float, float, float]:
        with tempfile.TemporaryDirectory(prefix="onnx-speedup-") as tmp:
            timing = time_onnx([reference, candidate], sample, spec, device, Path(tmp))
        ratio = speedup_of(timing.times[0], timing.times[1], "onnxruntime").median
        before, after = statistics.median(timing.times[0]) / 1000.0, statistics.median(timing.times[1]) / 1000.0
        return (ratio if ratio is not None else 1.0), before, after

    return measure
