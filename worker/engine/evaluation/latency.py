"""Inference latency: repeated timed forward passes on the job's device, models compared call by call.

Models compared (before/after) are timed interleaved, and the order alternates from one round to the next,
so both see the same machine load and neither always runs second (warm caches): a speedup measured at two
moments on a shared machine says more about the load than about the model. The speedup is the median of
the per-round ratios, and its spread is their interquartile range: a masked model, whose true speedup is
1.0x, reads as 1.0x with a spread that contains 1.0.

Medians also get a distribution-free confidence interval from order statistics (the binomial interval of
the median): with the default 30 rounds and 95% it runs from the 10th to the 21st smallest ratio. Gates
compare that interval, not the median alone, with their threshold (worker/engine/gates.py).
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from prunekit.spec.job import LatencySpec
from prunekit.spec.report import LatencyStats, SpeedupStats
from worker.engine.models.calling import batch_of, caller, inputs_to

# A latency budget's measurement: (speedup, reference seconds, candidate seconds) of (reference, candidate).
SpeedupFn = Callable[[torch.nn.Module, torch.nn.Module], tuple[float, float, float]]
Sample = torch.Tensor | Mapping[str, torch.Tensor]  # one sample ([1, ...]) of one input, or of named inputs


@torch.inference_mode()
def time_interleaved(
    modules: Sequence[torch.nn.Module], sample: Sample, spec: LatencySpec, device: torch.device
) -> tuple[list[list[float]], int]:
    """Milliseconds per call of each module, round by round (order alternating); also the threads used."""
    batch = inputs_to(batch_of(sample, spec.batch_size), device)
    calls = [caller(module, list(batch)) for module in modules]  # decided before timing: no per-call inspection
    previous_threads = torch.get_num_threads()
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    try:
        times = time_calls([functools.partial(c, batch) for c in calls], spec, lambda: _sync(device))
    finally:
        torch.set_num_threads(previous_threads)
    return times, spec.threads or previous_threads


def time_calls(calls: Sequence[Callable[[], object]], spec: LatencySpec, sync: Callable[[], None]) -> list[list[float]]:
    """Milliseconds of each call, round by round, the order alternating; `sync` waits for the device after each."""
    for _ in range(spec.warmup):
        for call in calls:  # interleaved too: whatever warms up process-wide warms up for every model alike
            call()
    sync()
    times: list[list[float]] = [[] for _ in calls]
    for round_ in range(spec.repeats):
        order = range(len(calls)) if round_ % 2 == 0 else reversed(range(len(calls)))
        for i in order:
            start = time.perf_counter()
            calls[i]()
            sync()
            times[i].append((time.perf_counter() - start) * 1000.0)
    return times


def measure_latencies(
    modules: Sequence[torch.nn.Module], sample: Sample, spec: LatencySpec, device: torch.device
) -> list[LatencyStats]:
    """Latency of each module on a batch of `spec.batch_size` copies of `sample` ([1, ...]), timed interleaved."""
    times, threads = time_interleaved(modules, sample, spec, device)
    return [latency_stats(t, spec, device, threads) for t in times]


def measure_latency(module: torch.nn.Module, sample: Sample, spec: LatencySpec, device: torch.device) -> LatencyStats:
    """Latency of one module (see measure_latencies)."""
    return measure_latencies([module], sample, spec, device)[0]


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values (linear interpolation, as numpy's default)."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, high, coverage): a distribution-free interval for the median from order statistics.

    Cuts the most values from each end that keeps P(median outside) <= 1 - confidence (binomial, p = 1/2);
    with too few values even min..max covers less, and the coverage returned says how much.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    tail, cut, below = (1.0 - confidence) / 2, 0, 0.5**n  # below = P(Binomial(n, 1/2) <= cut)
    while cut + 1 <= (n - 1) // 2 and below + math.comb(n, cut + 1) * 0.5**n <= tail:
        cut += 1
        below += math.comb(n, cut) * 0.5**n
    return ordered[cut], ordered[n - 1 - cut], 1.0 - 2 * below


def latency_stats(times: list[float], spec: LatencySpec, device: torch.device | str, threads: int) -> LatencyStats:
    ordered = sorted(times)
    low, high, coverage = median_interval(ordered, spec.confidence)
    return LatencyStats(
        median_ms=statistics.median(ordered),
        p90_ms=ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        p25_ms=_quantile(ordered, 0.25),
        p75_ms=_quantile(ordered, 0.75),
        batch_size=spec.batch_size,
        repeats=spec.repeats,
        device=str(device),
        threads=threads,
        ci_low_ms=low,
        ci_high_ms=high,
        confidence=coverage,
    )


def speedup_of(
    before_ms: Sequence[float], after_ms: Sequence[float], basis: str, confidence: float = 0.95
) -> SpeedupStats:
    """Median, interquartile range and median's interval of the per-round ratios before/after (paired in time)."""
    ratios = sorted(b / a for b, a in zip(before_ms, after_ms, strict=True) if a > 0)
    if not ratios:
        return SpeedupStats(median=None, low=None, high=None, rounds=0, within_noise=True, basis=basis)
    low, high = _quantile(ratios, 0.25), _quantile(ratios, 0.75)
    ci_low, ci_high, coverage = median_interval(ratios, confidence)
    return SpeedupStats(
        median=statistics.median(ratios),
        low=low,
        high=high,
        rounds=len(ratios),
        within_noise=low <= 1.0 <= high,
        basis=basis,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=coverage,
    )


def interleaved_speedup(sample: Sample, spec: LatencySpec, device: torch.device) -> SpeedupFn:
    """(speedup, before s, after s) of a candidate against a reference, timed together round by round.

    For latency budgets: two medians measured at different moments differ by the machine's load, which a
    search would otherwise follow; the median of paired ratios does not.
    """

    def measure(reference: torch.nn.Module, candidate: torch.nn.Module) -> tuple[float, float, float]:
        times, _ = time_interleaved([reference, candidate], sample, spec, device)
        ratio = speedup_of(times[0], times[1], "interleaved").median
        before, after = statistics.median(times[0]) / 1000.0, statistics.median(times[1]) / 1000.0
        return (ratio if ratio is not None else 1.0), before, after

    return measure


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
