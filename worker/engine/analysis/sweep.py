"""Sweeps: sparsities x regularizers x schedules, each point a compress trial, summarized with a Pareto front.

`plan_sweep` and `finalize` are what a distributed runner (one Celery task per trial) uses;
`run_sweep` runs the same plan sequentially in-process.
"""

from __future__ import annotations

from pathlib import Path

from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from worker.engine.analysis.trials import TrialPlan, finalize, trial_spec
from worker.engine.errors import InvalidSpecError
from worker.engine.pipeline import run_compress
from worker.engine.progress import ProgressEvent, StageProgress


def plan_sweep(spec: JobSpec) -> list[TrialPlan]:
    """One compress spec per grid point, with a readable name."""
    if spec.sweep is None:
        raise InvalidSpecError("a sweep job needs a 'sweep' section")
    plans = []
    for sparsity in spec.sweep.sparsities:
        for reg_name, regs in spec.sweep.regularizers.items():
            for schedule in spec.sweep.schedules:
                name = f"s{sparsity:g}-{reg_name}-{schedule}"
                params = {"sparsity": sparsity, "regularizers": reg_name, "schedule": schedule}
                plans.append(TrialPlan(name, params, trial_spec(spec, sparsity, regs, schedule)))
    return plans


def finalize_sweep(spec: JobSpec, plans: list[TrialPlan], trial_dirs: list[Path], out_dir: Path) -> Report:
    """Summarize finished trials into the sweep's report and artifact."""
    return finalize(spec, plans, trial_dirs, out_dir, spec.gates.max_accuracy_drop, {"trials_run": len(plans)})


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
