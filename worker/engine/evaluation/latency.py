"""Inference latency: median of repeated timed forward passes on the job's device."""

from __future__ import annotations

import statistics
import time

import torch

from prunekit.spec.job import LatencySpec
from prunekit.spec.report import LatencyStats


@torch.inference_mode()
def measure_latency(
    module: torch.nn.Module, sample: torch.Tensor, spec: LatencySpec, device: torch.device
) -> LatencyStats:
    """Time `spec.repeats` forward passes of a batch of `spec.batch_size` copies of `sample` (shape [1, ...])."""
    batch = sample.expand(spec.batch_size, *sample.shape[1:]).contiguous().to(device)
    previous_threads = torch.get_num_threads()
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    try:
        for _ in range(spec.warmup):
            module(batch)
        _sync(device)
        times = []
        for _ in range(spec.repeats):
            start = time.perf_counter()
            module(batch)
            _sync(device)
            times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous_threads)
    times.sort()
    return LatencyStats(
        median_ms=statistics.median(times),
        p90_ms=times[min(len(times) - 1, int(0.9 * len(times)))],
        batch_size=spec.batch_size,
        repeats=spec.repeats,
        device=str(device),
        threads=spec.threads or previous_threads,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
