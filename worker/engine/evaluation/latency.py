"""Inference latency: median of repeated timed forward passes on the job's device.

Models compared (before/after) are timed interleaved, call by call, so that both see the same machine load:
a speedup measured at two different moments on a shared machine says more about the load than the model.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from prunekit.spec.job import LatencySpec
from prunekit.spec.report import LatencyStats


@torch.inference_mode()
def measure_latencies(
    modules: Sequence[torch.nn.Module], sample: torch.Tensor, spec: LatencySpec, device: torch.device
) -> list[LatencyStats]:
    """Time each module on a batch of `spec.batch_size` copies of `sample` ([1, ...]), interleaved."""
    batch = sample.expand(spec.batch_size, *sample.shape[1:]).contiguous().to(device)
    previous_threads = torch.get_num_threads()
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    times: list[list[float]] = [[] for _ in modules]
    try:
        for module in modules:
            for _ in range(spec.warmup):
                module(batch)
        _sync(device)
        for _ in range(spec.repeats):
            for i, module in enumerate(modules):
                start = time.perf_counter()
                module(batch)
                _sync(device)
                times[i].append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous_threads)
    return [_stats(t, spec, device, spec.threads or previous_threads) for t in times]


def measure_latency(
    module: torch.nn.Module, sample: torch.Tensor, spec: LatencySpec, device: torch.device
) -> LatencyStats:
    """Latency of one module (see measure_latencies)."""
    return measure_latencies([module], sample, spec, device)[0]


def _stats(times: list[float], spec: LatencySpec, device: torch.device, threads: int) -> LatencyStats:
    times = sorted(times)
    return LatencyStats(
        median_ms=statistics.median(times),
        p90_ms=times[min(len(times) - 1, int(0.9 * len(times)))],
        batch_size=spec.batch_size,
        repeats=spec.repeats,
        device=str(device),
        threads=threads,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
