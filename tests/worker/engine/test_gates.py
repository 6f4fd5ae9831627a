"""Quality gates compare measured values with thresholds; unmeasured values fail with a reason."""

from __future__ import annotations

from prunekit.spec import GatesSpec
from worker.engine.gates import Measured, evaluate_gates


def test_pass_and_fail() -> None:
    gates = GatesSpec(max_accuracy_drop=0.02, min_sparsity=0.9, min_speedup=2.0)
    results = {g.name: g for g in evaluate_gates(gates, Measured(accuracy_drop=0.01, sparsity=0.9, speedup=1.5))}
    assert results["max_accuracy_drop"].passed
    assert results["min_sparsity"].passed  # exactly at the threshold passes
    assert not results["min_speedup"].passed and results["min_speedup"].comparison == ">="


def test_unmeasured_value_fails_with_reason() -> None:
    [result] = evaluate_gates(GatesSpec(max_accuracy_drop=0.02), Measured(why_missing="no labelled data"))
    assert not result.passed and result.value is None and result.reason == "no labelled data"


def test_no_gates_configured() -> None:
    assert evaluate_gates(GatesSpec(), Measured(accuracy_drop=0.5)) == []
