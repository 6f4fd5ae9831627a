"""Latency and speedup gates hold an interval: clearly met passes, clearly missed fails, a straddle says so."""

from __future__ import annotations

import pytest

from prunekit.spec import GatesSpec, JobSpec
from prunekit.spec.job import LatencySpec
from prunekit.spec.report import LatencyStats, RuntimeLatency, SpeedupStats
from worker.engine.evaluation.latency import latency_stats, median_interval, speedup_of
from worker.engine.evaluation.speedup_possible import speedup_possible
from worker.engine.gates import Interval, Measured, evaluate_gates, overall_status
from worker.engine.runtimes import timed_for_gates, wanted_runtimes

# 30 paired rounds of 10 ms; `after` is `before` divided by a factor that wobbles by +-3% round to round.
WOBBLE = [1.0 + 0.03 * ((i * 7) % 11 - 5) / 5 for i in range(30)]


def _rounds(factor: float) -> tuple[list[float], list[float]]:
    before = [10.0 + 0.1 * (i % 5) for i in range(30)]
    return before, [b / (factor * w) for b, w in zip(before, WOBBLE, strict=True)]


def _speedup_gate(factor: float, threshold: float = 1.0):  # type: ignore[no-untyped-def]
    s = speedup_of(*_rounds(factor), "eager vs eager")
    assert s.median is not None and s.ci_low is not None and s.ci_high is not None and s.confidence is not None
    interval = Interval(s.ci_low, s.ci_high, s.confidence, "pytorch", s.rounds)
    [gate] = evaluate_gates(GatesSpec(min_speedup=threshold), Measured(speedup=s.median, speedup_interval=interval))
    return gate, s


def test_median_interval_is_the_binomial_order_statistic_interval() -> None:
    # n = 30 at 95%: the 10th to the 21st smallest value, covering 1 - 2 P(Binomial(30, 1/2) <= 9) = 95.7%.
    low, high, coverage = median_interval([float(v) for v in range(30, 0, -1)])
    assert (low, high) == (10.0, 21.0) and coverage == pytest.approx(0.9572, abs=1e-4)
    # Too few values for 95%: min..max, with the lower coverage it has.
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0, 0.75)
    with pytest.raises(ValueError):
        median_interval([])


def test_a_clearly_met_speedup_gate_passes() -> None:
    gate, s = _speedup_gate(1.5)
    assert s.ci_low is not None and s.ci_low > 1.3
    assert gate.outcome == "passed" and gate.passed and gate.reason == ""
    assert (gate.interval_low, gate.interval_high, gate.runtime) == (s.ci_low, s.ci_high, "pytorch")


def test_a_clearly_missed_speedup_gate_fails() -> None:
    gate, s = _speedup_gate(0.7)
    assert s.ci_high is not None and s.ci_high < 0.8
    assert gate.outcome == "failed" and not gate.passed


def test_a_speedup_whose_interval_straddles_the_threshold_is_inconclusive() -> None:
    gate, s = _speedup_gate(1.0)
    assert s.ci_low is not None and s.ci_high is not None and s.ci_low < 1.0 < s.ci_high
    assert gate.outcome == "inconclusive" and not gate.passed
    assert "straddles 1x" in gate.reason and "evaluation.latency.repeats" in gate.reason
    assert overall_status([gate]) == "inconclusive"


def test_the_median_alone_would_have_passed_a_straddling_gate() -> None:
    # Median 1.01x >= 1.0, but the interval reaches below 1.0: the median's side is noise, so no pass.
    gate, s = _speedup_gate(1.01)
    assert s.median is not None and s.median >= 1.0 and s.ci_low is not None and s.ci_low < 1.0
    assert gate.outcome == "inconclusive"


def test_latency_gate_holds_the_median_latencys_interval() -> None:
    spec = LatencySpec()
    stats = latency_stats([9.0 + 0.1 * i for i in range(30)], spec, "cpu", 1)  # median 10.45, interval 9.9-11.0
    assert stats.ci_low_ms == pytest.approx(9.9) and stats.ci_high_ms == pytest.approx(11.0)
    interval = Interval(stats.ci_low_ms or 0, stats.ci_high_ms or 0, stats.confidence or 0, "pytorch", 30)
    outcomes = {
        threshold: evaluate_gates(
            GatesSpec(max_latency_ms=threshold), Measured(latency_ms=stats.median_ms, latency_interval=interval)
        )[0].outcome
        for threshold in (12.0, 10.5, 9.0)
    }
    assert outcomes == {12.0: "passed", 10.5: "inconclusive", 9.0: "failed"}


def test_a_failed_gate_outranks_an_inconclusive_one() -> None:
    straddle, _ = _speedup_gate(1.0)
    [missed] = evaluate_gates(GatesSpec(min_sparsity=0.9), Measured(sparsity=0.5))
    assert overall_status([straddle, missed]) == "gate_missed"
    assert overall_status([]) == "passed"


def test_gates_read_the_runtime_they_name_and_say_when_it_was_not_timed() -> None:
    stats = LatencyStats(median_ms=2.0, p90_ms=2.5, batch_size=1, repeats=30, device="cpu", ci_low_ms=1.9,
                         ci_high_ms=2.1, confidence=0.957)  # fmt: skip
    speedup = SpeedupStats(median=1.8, low=1.7, high=1.9, rounds=30, within_noise=False, basis="x", ci_low=1.75,
                           ci_high=1.85, confidence=0.957)  # fmt: skip
    rows = [
        RuntimeLatency(runtime="pytorch", engine="eager", before=stats, after=stats, speedup=speedup),
        RuntimeLatency(runtime="onnxruntime", engine="", note="not measured on ONNX Runtime: export failed"),
    ]
    timed = timed_for_gates("pytorch", rows)
    assert timed.speedup == 1.8 and timed.speedup_interval is not None and timed.speedup_interval.low == 1.75
    onnx = timed_for_gates("onnxruntime", rows)
    gates = GatesSpec(min_speedup=1.5, runtime="onnxruntime")
    [gate] = evaluate_gates(gates, Measured(speedup=onnx.speedup, why_latency_missing=onnx.why_missing))
    assert gate.outcome == "failed" and gate.reason == "not measured on ONNX Runtime: export failed"
    assert gate.runtime == "onnxruntime"


def test_onnxruntime_is_timed_when_anything_asks_for_it() -> None:
    base = {"pruning": {"method": "magnitude"}}
    assert wanted_runtimes(JobSpec.model_validate(base)) == ["pytorch"]
    for extra in (
        {"evaluation": {"runtimes": ["pytorch", "onnxruntime"]}},
        {"output": {"also_onnx": True}},
        {"gates": {"min_speedup": 1.2, "runtime": "onnxruntime"}},
    ):
        assert wanted_runtimes(JobSpec.model_validate(base | extra)) == ["pytorch", "onnxruntime"], extra
    structural = {"pruning": {"method": "structural", "target_speedup": 1.5, "target_speedup_runtime": "onnxruntime"}}
    assert wanted_runtimes(JobSpec.model_validate(structural)) == ["pytorch", "onnxruntime"]


@pytest.mark.parametrize(
    ("pruning", "expected"),
    [
        ({"method": "structural"}, True),
        ({"method": "magnitude"}, False),
        ({"method": "random"}, False),
        ({"method": "channel"}, False),
        ({"method": "nm"}, False),
        ({"method": "wanda"}, False),
        ({"method": "sparsegpt", "pattern": "n:m"}, False),
    ],
)
def test_whether_a_speedup_can_exist_per_method(pruning: dict[str, object], expected: bool) -> None:
    spec = JobSpec.model_validate({"pruning": pruning}).pruning
    for runtime in ("pytorch", "onnxruntime"):
        possible, why = speedup_possible(spec, runtime)  # type: ignore[arg-type]
        assert possible is expected and why
    if pruning.get("method") == "nm" or pruning.get("pattern") == "n:m":
        assert "2:4" in speedup_possible(spec, "pytorch")[1]
