"""Quality gates: compare measured values with the spec's thresholds.

A latency or speedup gate compares the value's confidence interval, not the median alone: an interval
wholly on the good side passes, wholly on the bad side fails, and one that straddles the threshold is
`inconclusive`, because which side the median falls on would be decided by timing noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prunekit.spec import GatesSpec
from prunekit.spec.report import GateOutcome, GateResult, ReportStatus

Comparison = Literal["<=", ">="]

# Room for float rounding: e.g. a measured 0.9 sparsity passes min_sparsity 0.9.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Interval:
    """A measured value's confidence interval, with its coverage and what it was measured on."""

    low: float
    high: float
    confidence: float
    runtime: str
    repeats: int


@dataclass
class Measured:
    """The values gates look at; None means it was not measured (the gate then fails, with the reason)."""

    accuracy_drop: float | None = None
    sparsity: float | None = None
    latency_ms: float | None = None
    artifact_bytes: int | None = None
    speedup: float | None = None
    generalization_gap: float | None = None
    perplexity_increase: float | None = None
    why_missing: str = "not measured"
    latency_interval: Interval | None = None
    speedup_interval: Interval | None = None
    why_latency_missing: str = "not measured"  # for the latency and speedup gates (e.g. ONNX export failed)


# gate name -> (measured attribute, comparison); "<=" means value must not exceed the threshold.
_GATES: dict[str, tuple[str, Comparison]] = {
    "max_accuracy_drop": ("accuracy_drop", "<="),
    "min_sparsity": ("sparsity", ">="),
    "max_latency_ms": ("latency_ms", "<="),
    "max_artifact_bytes": ("artifact_bytes", "<="),
    "min_speedup": ("speedup", ">="),
    "max_generalization_gap": ("generalization_gap", "<="),
    "max_perplexity_increase": ("perplexity_increase", "<="),
}

# Gates whose value is a timing median: they hold the value's interval against the threshold.
_INTERVAL_OF = {"max_latency_ms": "latency_interval", "min_speedup": "speedup_interval"}
_TIMED = {"latency_ms", "speedup"}


def evaluate_gates(spec: GatesSpec, measured: Measured) -> list[GateResult]:
    """One result per configured gate, in a stable order."""
    results = []
    for name, (attr, cmp) in _GATES.items():
        threshold = getattr(spec, name)
        if threshold is None:
            continue
        value = getattr(measured, attr)
        interval: Interval | None = getattr(measured, _INTERVAL_OF[name]) if name in _INTERVAL_OF else None
        runtime = spec.runtime if name in _INTERVAL_OF else None
        if value is None:
            why = measured.why_latency_missing if attr in _TIMED else measured.why_missing
            results.append(_result(name, None, threshold, cmp, "failed", why, None, runtime))
            continue
        outcome = gate_outcome(float(value), threshold, cmp, interval)
        reason = explain(name, float(value), threshold, cmp, interval) if outcome == "inconclusive" else ""
        results.append(_result(name, float(value), threshold, cmp, outcome, reason, interval, runtime))
    return results


def _meets(value: float, threshold: float, cmp: str) -> bool:
    return value <= threshold + TOLERANCE if cmp == "<=" else value >= threshold - TOLERANCE


def gate_outcome(value: float, threshold: float, cmp: str, interval: Interval | None) -> GateOutcome:
    """passed / failed on the value; with an interval, inconclusive when its ends fall on both sides."""
    if interval is None:
        return "passed" if _meets(value, threshold, cmp) else "failed"
    low_ok, high_ok = _meets(interval.low, threshold, cmp), _meets(interval.high, threshold, cmp)
    if low_ok and high_ok:
        return "passed"
    if not low_ok and not high_ok:
        return "failed"
    return "inconclusive"


def explain(name: str, value: float, threshold: float, cmp: str, interval: Interval | None) -> str:
    """Why an interval gate cannot tell, in words a user can act on."""
    if interval is None:
        return ""
    if name == "min_speedup":
        what = f"speedup {value:.2f}x, {interval.confidence:.0%} interval {interval.low:.2f}x-{interval.high:.2f}x"
        limit = f"{threshold:g}x"
    else:
        what = f"latency {value:.3g} ms, {interval.confidence:.0%} interval {interval.low:.3g}-{interval.high:.3g} ms"
        limit = f"{threshold:g} ms"
    return (
        f"{what} ({interval.runtime}, {interval.repeats} rounds) straddles {limit}: timing noise decides which side "
        "the median falls on, so this gate cannot tell; raise evaluation.latency.repeats, time on a quieter "
        "machine, or drop the gate"
    )


def _result(
    name: str,
    value: float | None,
    threshold: float,
    cmp: Comparison,
    outcome: GateOutcome,
    reason: str,
    interval: Interval | None,
    runtime: str | None,
) -> GateResult:
    return GateResult(
        name=name,
        value=value,
        threshold=threshold,
        comparison=cmp,
        passed=outcome == "passed",
        reason=reason,
        outcome=outcome,
        interval_low=interval.low if interval else None,
        interval_high=interval.high if interval else None,
        confidence=interval.confidence if interval else None,
        runtime=runtime,
    )


def overall_status(results: list[GateResult]) -> ReportStatus:
    """gate_missed when a gate failed; else inconclusive when one could not tell; else passed."""
    outcomes = {r.outcome for r in results}
    if "failed" in outcomes:
        return "gate_missed"
    return "inconclusive" if "inconclusive" in outcomes else "passed"
