"""Sweep trials grouped by grid point (sparsity, regularizers, schedule): mean and 95% interval over seeds.

Pure and torch-free: it reads `Trial` rows only, so tests can feed it a hand-made trial table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from prunekit.spec.report import MetricInterval, SweepPoint, Trial

# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30; beyond that the normal 1.96 is close enough.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

GridKey = tuple[float, str, str]
_METRICS: dict[str, Callable[[Trial], float | None]] = {
    "val_accuracy": lambda t: t.val_accuracy,
    "train_accuracy": lambda t: t.train_accuracy,
    "val_loss": lambda t: t.val_loss,
    "train_loss": lambda t: t.train_loss,
    "gap": lambda t: t.gap,
}


def point_name(sparsity: float, regularizers: str, schedule: str) -> str:
    """A grid point's readable name, e.g. 's0.8-l2-oneshot' (its trials add '-seed<n>' when seeds > 1)."""
    return f"s{sparsity:g}-{regularizers}-{schedule}"


def t_quantile(df: int) -> float:
    """t(0.975, df): half-width multiplier of a two-sided 95% interval."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 values")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def interval(values: Sequence[float]) -> MetricInterval:
    """Mean and 95% Student-t interval of `values`; no interval for fewer than two."""
    n = len(values)
    if n == 0:
        return MetricInterval()
    mean = math.fsum(values) / n
    if n == 1:
        return MetricInterval(mean=mean, n=1)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return MetricInterval(mean=mean, low=mean - half, high=mean + half, n=n)


def grid_key(trial: Trial) -> GridKey:
    """The grid point a sweep trial belongs to, from the params its plan gave it."""
    p: dict[str, Any] = trial.params
    return (float(p.get("sparsity", trial.sparsity)), str(p.get("regularizers", "none")), str(p.get("schedule", "")))


def aggregate_points(trials: Sequence[Trial]) -> list[SweepPoint]:
    """One SweepPoint per grid point, in the order the trials first name them."""
    groups: dict[GridKey, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(grid_key(trial), []).append(trial)
    return [_point(key, members) for key, members in groups.items()]


def _point(key: GridKey, members: list[Trial]) -> SweepPoint:
    sparsity, regularizers, schedule = key
    stats = {name: interval([v for t in members if (v := get(t)) is not None]) for name, get in _METRICS.items()}
    return SweepPoint(
        name=point_name(sparsity, regularizers, schedule),
        sparsity=sparsity,
        regularizers=regularizers,
        schedule=schedule,
        n=len(members),
        trials=[t.name for t in members],
        achieved_sparsity=math.fsum(t.sparsity for t in members) / len(members),
        **stats,
    )
