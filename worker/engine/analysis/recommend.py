"""The sweep's recommendation: the grid point with the best mean validation metric, and whether its lead is noise.

A lead counts when the best point's 95% interval does not overlap the next best's. Pure: it reads SweepPoints.
"""

from __future__ import annotations

from collections.abc import Sequence

from prunekit.spec.report import MetricInterval, SweepPoint, SweepRecommendation

# metric -> (words, higher is better)
_METRICS = {"val_accuracy": ("validation accuracy", True), "val_loss": ("validation loss", False)}


def choose_metric(points: Sequence[SweepPoint]) -> str:
    """Validation accuracy when any point measured it, else validation loss."""
    return "val_accuracy" if any(p.val_accuracy.mean is not None for p in points) else "val_loss"


def ranked(points: Sequence[SweepPoint], metric: str) -> list[SweepPoint]:
    """Points with a mean for `metric`, best first (ties: the sparser point first)."""
    higher = _METRICS[metric][1]
    measured = [p for p in points if _stat(p, metric).mean is not None]
    return sorted(measured, key=lambda p: (-(_mean(p, metric)) if higher else _mean(p, metric), -p.sparsity))


def overlaps(a: MetricInterval, b: MetricInterval) -> bool:
    """Whether two intervals share a value (a missing interval counts as its mean alone)."""
    a_low, a_high = _bounds(a)
    b_low, b_high = _bounds(b)
    return a_low <= b_high and b_low <= a_high


def recommend(points: Sequence[SweepPoint], metric: str | None = None) -> SweepRecommendation | None:
    """Recommend a grid point, or say the top points are within noise; None when nothing was measured."""
    metric = metric or choose_metric(points)
    order = ranked(points, metric)
    if not order:
        return None
    best = order[0]
    if len(order) == 1:
        return _make("single_point", metric, best, [], f"Only one grid point was measured: {_describe(best, metric)}.")
    runner = order[1]
    if _stat(best, metric).low is None or _stat(runner, metric).low is None:
        return _make("point_estimate", metric, best, [], _point_estimate_text(points, best, runner, metric))
    if not overlaps(_stat(best, metric), _stat(runner, metric)):
        text = f"Recommended: {_describe(best, metric)}; clear of the next best, {_describe(runner, metric, False)}."
        return _make("clear_winner", metric, best, [], text)
    tied = [p for p in order if overlaps(_stat(best, metric), _stat(p, metric))]
    text = (
        f"No clear winner: the differences among the top {len(tied)} grid points are within noise (their 95% "
        f"intervals of {_METRICS[metric][0]} overlap the best's): "
        + "; ".join(_describe(p, metric, settings=False) for p in tied)
        + f". The highest mean is {_settings(best)}; more seeds may separate them."
    )
    return _make("within_noise", metric, best, [p.name for p in tied], text)


def _point_estimate_text(points: Sequence[SweepPoint], best: SweepPoint, runner: SweepPoint, metric: str) -> str:
    if all(_stat(p, metric).n < 2 for p in points):
        why = "No interval is available (one seed per grid point)"
    else:
        why = f"No interval is available for {best.name if _stat(best, metric).n < 2 else runner.name} (one seed)"
    return (
        f"{why}, so this rests on point estimates: the best is {_describe(best, metric)}, the next "
        f"{_describe(runner, metric, settings=False)}; set sweep.seeds to 2 or more to tell a lead from noise."
    )


def _make(verdict: str, metric: str, best: SweepPoint, tied: list[str], message: str) -> SweepRecommendation:
    return SweepRecommendation.model_validate(
        {
            "verdict": verdict,
            "metric": metric,
            "point": best.name,
            "sparsity": best.sparsity,
            "regularizers": best.regularizers,
            "schedule": best.schedule,
            "tied": tied,
            "message": message,
        }
    )


def _stat(point: SweepPoint, metric: str) -> MetricInterval:
    stat: MetricInterval = getattr(point, metric)
    return stat


def _mean(point: SweepPoint, metric: str) -> float:
    return _stat(point, metric).mean or 0.0


def _bounds(m: MetricInterval) -> tuple[float, float]:
    mean = m.mean or 0.0
    return (m.low if m.low is not None else mean, m.high if m.high is not None else mean)


def _settings(point: SweepPoint) -> str:
    return (
        f"{point.name} (sparsity {point.sparsity * 100:g}%, regularizers '{point.regularizers}', "
        f"schedule '{point.schedule}')"
    )


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "?"
    return f"{value * 100:.2f}%" if metric.endswith("accuracy") else f"{value:.4f}"


def _describe(point: SweepPoint, metric: str, settings: bool = True) -> str:
    """'<point> at <mean> (95% CI <low>-<high>, n seeds)', or the mean alone without an interval."""
    stat = _stat(point, metric)
    head = _settings(point) if settings else point.name
    words = ("mean " if stat.n > 1 else "") + _METRICS[metric][0] if settings else ""
    value = f"{words} {_fmt(stat.mean, metric)}".strip()
    if stat.low is None:
        return f"{head}: {value} ({stat.n} seed{'s' if stat.n != 1 else ''}, no interval)"
    return f"{head}: {value} (95% CI {_fmt(stat.low, metric)} to {_fmt(stat.high, metric)}, {stat.n} seeds)"
