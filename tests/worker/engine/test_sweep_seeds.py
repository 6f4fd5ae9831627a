"""Sweeps with several seeds per grid point: planning, aggregation (mean, 95% t interval) and the recommendation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from prunekit.spec import JobSpec
from prunekit.spec.report import SweepPoint, Trial
from worker.engine.analysis.aggregate import aggregate_points, interval, t_quantile
from worker.engine.analysis.recommend import recommend
from worker.engine.analysis.sweep import plan_sweep
from worker.engine.api import JobInputs, run_job

BASE = {
    "kind": "sweep",
    "model": {"architecture": "prunekit/digits_cnn"},
    "pruning": {"method": "magnitude", "sparsity": 0.5},
    "finetune": {"epochs": 1, "batch_size": 128},
    "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
}


def _trial(sparsity: float, reg: str, seed: int, val: float, train: float | None = None) -> Trial:
    train = val + 0.02 if train is None else train
    return Trial(
        name=f"s{sparsity:g}-{reg}-oneshot-seed{seed}",
        params={"sparsity": sparsity, "regularizers": reg, "schedule": "oneshot", "seed": seed},
        sparsity=sparsity,
        val_accuracy=val,
        train_accuracy=train,
        gap=train - val,
        val_loss=1 - val,
        train_loss=1 - train,
    )


def _table(rows: dict[tuple[float, str], list[float]]) -> list[Trial]:
    """Trials from {(sparsity, regularizers): [val accuracy per seed]}."""
    return [_trial(sp, reg, seed, v) for (sp, reg), vals in rows.items() for seed, v in enumerate(vals)]


def _points(rows: dict[tuple[float, str], list[float]]) -> list[SweepPoint]:
    return aggregate_points(_table(rows))


# ------------------------------------------------------------------ spec and plan


def test_seeds_default_to_one_and_are_bounded() -> None:
    spec = JobSpec.model_validate({**BASE, "sweep": {"sparsities": [0.5]}})
    assert spec.sweep is not None and spec.sweep.seeds == 1
    for bad in (0, 11):
        with pytest.raises(ValidationError):
            JobSpec.model_validate({**BASE, "sweep": {"sparsities": [0.5], "seeds": bad}})


def test_plan_runs_each_grid_point_once_per_seed_with_unique_names() -> None:
    sweep = {"sparsities": [0.5, 0.8], "regularizers": {"none": {}, "l2": {"l2": 1e-4}}, "seeds": 3}
    plans = plan_sweep(JobSpec.model_validate({**BASE, "seed": 7, "sweep": sweep}))
    assert len(plans) == 12 and len({p.name for p in plans}) == 12
    assert [p.name for p in plans[:3]] == [f"s0.5-none-oneshot-seed{s}" for s in (7, 8, 9)]
    assert [p.spec.seed for p in plans[:3]] == [7, 8, 9] and [p.params["seed"] for p in plans[:3]] == [7, 8, 9]
    assert all(p.spec.kind == "compress" and p.spec.sweep is None for p in plans)
    assert plans[-1].name == "s0.8-l2-oneshot-seed9" and plans[-1].spec.finetune.regularizers.l2 == 1e-4


def test_one_seed_keeps_the_plain_trial_names_and_seeds_wrap_at_the_limit() -> None:
    one = plan_sweep(JobSpec.model_validate({**BASE, "seed": 3, "sweep": {"sparsities": [0.5]}}))
    assert [(p.name, p.spec.seed) for p in one] == [("s0.5-none-oneshot", 3)]
    top = JobSpec.model_validate({**BASE, "seed": 2**31 - 1, "sweep": {"sparsities": [0.5], "seeds": 2}})
    assert [p.spec.seed for p in plan_sweep(top)] == [2**31 - 1, 0]


# ------------------------------------------------------------------ aggregation


def test_interval_is_the_student_t_interval() -> None:
    stat = interval([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)  # sd 1, t(0.975, 2) = 4.303
    assert stat.n == 3 and stat.mean == pytest.approx(2.0)
    assert stat.low == pytest.approx(2.0 - half) and stat.high == pytest.approx(2.0 + half)
    single = interval([0.7])
    assert (single.mean, single.low, single.high, single.n) == (0.7, None, None, 1)
    assert interval([]).mean is None
    assert t_quantile(1) == pytest.approx(12.706) and t_quantile(100) == pytest.approx(1.96)


def test_points_group_trials_by_grid_point_over_seeds() -> None:
    points = _points({(0.5, "l2"): [0.95, 0.96, 0.955], (0.9, "none"): [0.80, 0.82]})
    assert [(p.name, p.n) for p in points] == [("s0.5-l2-oneshot", 3), ("s0.9-none-oneshot", 2)]
    first = points[0]
    assert first.trials == ["s0.5-l2-oneshot-seed0", "s0.5-l2-oneshot-seed1", "s0.5-l2-oneshot-seed2"]
    assert first.val_accuracy.mean == pytest.approx(0.955)
    assert first.train_accuracy.mean == pytest.approx(0.975)
    assert first.gap.mean == pytest.approx(0.02) and first.gap.n == 3
    assert first.val_loss.mean == pytest.approx(0.045) and first.train_loss.mean == pytest.approx(0.025)
    half = 4.303 * 0.005 / math.sqrt(3)
    assert first.val_accuracy.low == pytest.approx(0.955 - half, abs=1e-9)
    assert points[1].val_accuracy.high is not None and points[1].val_accuracy.n == 2


# ------------------------------------------------------------------ recommendation


def test_clear_winner_is_named_with_its_settings() -> None:
    rec = recommend(
        _points({(0.5, "none"): [0.90, 0.91, 0.905], (0.5, "l2"): [0.95, 0.96, 0.955], (0.9, "none"): [0.8, 0.81]})
    )
    assert rec is not None and rec.verdict == "clear_winner"
    assert (rec.point, rec.sparsity, rec.regularizers, rec.schedule) == ("s0.5-l2-oneshot", 0.5, "l2", "oneshot")
    assert rec.message.startswith("Recommended: s0.5-l2-oneshot (sparsity 50%, regularizers 'l2'")
    assert "next best, s0.5-none-oneshot" in rec.message and rec.tied == []


def test_overlapping_intervals_are_called_noise_and_the_top_points_named() -> None:
    rec = recommend(
        _points({(0.5, "none"): [0.95, 0.97, 0.93], (0.8, "l2"): [0.94, 0.96, 0.92], (0.9, "none"): [0.70, 0.71, 0.72]})
    )
    assert rec is not None and rec.verdict == "within_noise"
    assert rec.tied == ["s0.5-none-oneshot", "s0.8-l2-oneshot"]
    assert rec.point == "s0.5-none-oneshot"
    assert "within noise" in rec.message and "s0.8-l2-oneshot" in rec.message
    assert "s0.9-none-oneshot" not in rec.message


def test_one_seed_recommends_on_point_estimates_and_says_so() -> None:
    rec = recommend(_points({(0.5, "none"): [0.90], (0.8, "l2"): [0.93], (0.9, "none"): [0.7]}))
    assert rec is not None and rec.verdict == "point_estimate"
    assert (rec.point, rec.regularizers, rec.sparsity) == ("s0.8-l2-oneshot", "l2", 0.8)
    assert rec.message.startswith("No interval is available (one seed per grid point)")
    assert "point estimates" in rec.message


def test_a_point_left_with_one_seed_is_flagged_by_name() -> None:
    rec = recommend(_points({(0.5, "none"): [0.95], (0.8, "none"): [0.90, 0.91]}))
    assert rec is not None and rec.verdict == "point_estimate"
    assert rec.message.startswith("No interval is available for s0.5-none-oneshot (one seed)")


def test_equal_means_prefer_the_sparser_point_and_edge_cases() -> None:
    rec = recommend(_points({(0.5, "none"): [0.9, 0.9], (0.8, "none"): [0.9, 0.9]}))
    assert rec is not None and rec.point == "s0.8-none-oneshot" and rec.verdict == "within_noise"
    only = recommend(_points({(0.5, "none"): [0.9, 0.91]}))
    assert only is not None and only.verdict == "single_point"
    unmeasured = aggregate_points([Trial(name="a", params={"sparsity": 0.5}, sparsity=0.5)])
    assert recommend(unmeasured) is None


# ------------------------------------------------------------------ the engine, in-process


def test_sweep_with_two_seeds_reports_points_and_a_recommendation(
    torchscript_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    from prunekit.reporting import render_report_html

    spec = JobSpec.model_validate({**BASE, "seed": 1, "sweep": {"sparsities": [0.5, 0.95], "seeds": 2}})
    out = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path, isolate=False)
    report = out.report
    assert [t.name for t in report.trials] == [
        "s0.5-none-oneshot-seed1",
        "s0.5-none-oneshot-seed2",
        "s0.95-none-oneshot-seed1",
        "s0.95-none-oneshot-seed2",
    ]
    assert all(t.val_loss is not None and t.train_loss is not None for t in report.trials)
    assert [(p.name, p.n) for p in report.sweep_points] == [("s0.5-none-oneshot", 2), ("s0.95-none-oneshot", 2)]
    for p in report.sweep_points:
        for stat in (p.val_accuracy, p.train_accuracy, p.val_loss, p.train_loss, p.gap):
            assert stat.n == 2 and stat.low is not None and stat.high is not None
            assert stat.low <= stat.mean <= stat.high  # type: ignore[operator]
    rec = report.sweep_recommendation
    assert rec is not None and rec == recommend(aggregate_points(report.trials))
    assert rec.message in report.notes
    on_disk = json.loads(out.report_path.read_text())
    assert on_disk["sweep_recommendation"]["point"] == rec.point and len(on_disk["sweep_points"]) == 2
    page = render_report_html(on_disk)
    assert 'id="plot-sweep-accuracy"' in page and 'id="plot-sweep-gap"' in page
    assert 'id="sweep-recommendation"' in page
