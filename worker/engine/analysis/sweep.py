"""Sweeps: sparsities x regularizers x schedules (x seeds), each a compress trial, summarized with a Pareto front,
per-grid-point means and 95% intervals over seeds, and a recommendation.

`plan_sweep` and `finalize_sweep` are what a distributed runner (one Celery task per trial) uses;
`run_sweep` runs the same plan sequentially in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunekit.spec import JobSpec
from prunekit.spec.report import Report, Trial
from worker.engine.analysis.aggregate import aggregate_points, point_name
from worker.engine.analysis.recommend import recommend
from worker.engine.analysis.trials import TrialPlan, finalize, trial_spec
from worker.engine.errors import InvalidSpecError
from worker.engine.pipeline import run_compress
from worker.engine.progress import ProgressEvent, StageProgress

SEED_LIMIT = 2**31  # spec seeds are below this; seed + i wraps around past it


def plan_sweep(spec: JobSpec) -> list[TrialPlan]:
    """One compress spec per grid point and seed, with a readable, unique name."""
    if spec.sweep is None:
        raise InvalidSpecError("a sweep job needs a 'sweep' section")
    seeds = [(spec.seed + i) % SEED_LIMIT for i in range(spec.sweep.seeds)]
    plans = []
    for sparsity in spec.sweep.sparsities:
        for reg_name, regs in spec.sweep.regularizers.items():
            for schedule in spec.sweep.schedules:
                base = point_name(sparsity, reg_name, schedule)
                point_spec = trial_spec(spec, sparsity, regs, schedule)
                for seed in seeds:
                    name = f"{base}-seed{seed}" if len(seeds) > 1 else base
                    params = {"sparsity": sparsity, "regularizers": reg_name, "schedule": schedule, "seed": seed}
                    plans.append(TrialPlan(name, params, point_spec.model_copy(update={"seed": seed})))
    return plans


def summarize_sweep(trials: list[Trial]) -> dict[str, Any]:
    """Report fields from all trials: grid points over seeds and the recommendation (also a note)."""
    points = aggregate_points(trials)
    rec = recommend(points)
    notes = [rec.message] if rec else ["no recommendation: no trial measured a validation metric"]
    if any(p.n > 1 for p in points):
        notes.append("the artifact is one trial's model (one seed); sweep_points give each grid point's mean")
    return {"sweep_points": points, "sweep_recommendation": rec, "notes": notes}


def finalize_sweep(spec: JobSpec, plans: list[TrialPlan], trial_dirs: list[Path], out_dir: Path) -> Report:
    """Summarize finished trials into the sweep's report and artifact."""
    extra = {"trials_run": len(plans)}
    return finalize(spec, plans, trial_dirs, out_dir, spec.gates.max_accuracy_drop, extra, summarize_sweep)


def run_sweep(
    spec: JobSpec, model_path: Path, data_path: Path | None, out_dir: Path, progress: StageProgress
) -> Report:
    """Run every trial here, one after the other."""
    plans = plan_sweep(spec)
    dirs = []
    for i, plan in enumerate(plans):
        trial_dir = out_dir / "trials" / plan.name
        run_compress(plan.spec, model_path, data_path, trial_dir, _scaled(progress, i, len(plans), plan.name))
        dirs.append(trial_dir)
    return finalize_sweep(spec, plans, dirs, out_dir)


def _scaled(progress: StageProgress, index: int, total: int, name: str) -> StageProgress:
    """Map one trial's own 0-100% onto its slice of the whole job."""

    def sink(event: ProgressEvent) -> None:
        fraction = (index + event.percent / 100.0) / total
        progress.update("trials", fraction, f"{name}: {event.stage}", trial=name, **event.metrics)

    return StageProgress(sink)
