"""Quality gates: compare measured values with the spec's thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.spec import GatesSpec
from prunekit.spec.report import GateResult


@dataclass
class Measured:
    """The values gates look at; None means it was not measured (the gate then fails, with the reason)."""

    accuracy_drop: float | None = None
    sparsity: float | None = None
    latency_ms: float | None = None
    artifact_bytes: int | None = None
    speedup: float | None = None
    generalization_gap: float | None = None
    why_missing: str = "not measured"


# gate name -> (measured attribute, comparison); "<=" means value must not exceed the threshold.
_GATES: dict[str, tuple[str, str]] = {
    "max_accuracy_drop": ("accuracy_drop", "<="),
    "min_sparsity": ("sparsity", ">="),
    "max_latency_ms": ("latency_ms", "<="),
    "max_artifact_bytes": ("artifact_bytes", "<="),
    "min_speedup": ("speedup", ">="),
    "max_generalization_gap": ("generalization_gap", "<="),
}


def evaluate_gates(spec: GatesSpec, measured: Measured) -> list[GateResult]:
    """One result per configured gate, in a stable order."""
    results = []
    for name, (attr, cmp) in _GATES.items():
        threshold = getattr(spec, name)
        if threshold is None:
            continue
        value = getattr(measured, attr)
        if value is None:
            results.append(
                GateResult(
                    name=name,
                    value=None,
                    threshold=threshold,
                    comparison=cmp,
                    passed=False,
                    reason=measured.why_missing,
                )
            )
            continue
        # A tiny tolerance so that e.g. a measured 0.9 sparsity passes min_sparsity 0.9 despite float rounding.
        passed = value <= threshold + 1e-9 if cmp == "<=" else value >= threshold - 1e-9
        results.append(GateResult(name=name, value=float(value), threshold=threshold, comparison=cmp, passed=passed))
    return results
