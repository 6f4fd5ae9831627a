"""Accuracy-aware search: the highest global sparsity whose accuracy drop stays within a tolerance.

Bisection on the global target: each probe is a full compress trial (prune + fine-tune) measured on its
saved artifact, so the chosen model's drop is what an independent re-evaluation finds.
"""

from __future__ import annotations

from pathlib import Path

from prunekit.spec import JobSpec, SearchSpec
from prunekit.spec.report import Report
from worker.engine.analysis.trials import TrialPlan, finalize, read_trial_report, trial_spec
from worker.engine.errors import InvalidSpecError
from worker.engine.pipeline import run_compress
from worker.engine.progress import ProgressEvent, StageProgress


def _probe(
    spec: JobSpec,
    sparsity: float,
    index: int,
    model_path: Path,
    data_path: Path | None,
    out_dir: Path,
    progress: StageProgress,
) -> tuple[TrialPlan, Path, float | None]:
    assert spec.search is not None
    plan = TrialPlan(f"probe{index}-s{sparsity:.4f}", {"sparsity": round(sparsity, 6)}, trial_spec(spec, sparsity))
    trial_dir = out_dir / "trials" / plan.name

    def sink(event: ProgressEvent) -> None:
        fraction = (index + event.percent / 100.0) / spec.search.max_trials  # type: ignore[union-attr]
        progress.update("trials", fraction, f"{plan.name}: {event.stage}", trial=plan.name, **event.metrics)

    report = run_compress(plan.spec, model_path, data_path, trial_dir, StageProgress(sink))
    return plan, trial_dir, report.accuracy_drop


def run_search(
    spec: JobSpec, model_path: Path, data_path: Path | None, out_dir: Path, progress: StageProgress
) -> Report:
    """Bisect [low, high] until the bracket is narrower than `resolution` or trials run out."""
    search: SearchSpec | None = spec.search
    if search is None or search.low >= search.high:
        raise InvalidSpecError("search needs low < high")
    plans: list[TrialPlan] = []
    dirs: list[Path] = []

    def probe(sparsity: float) -> bool:
        plan, trial_dir, drop = _probe(spec, sparsity, len(plans), model_path, data_path, out_dir, progress)
        if drop is None:
            raise InvalidSpecError("search needs labelled data to measure the accuracy drop")
        plans.append(plan)
        dirs.append(trial_dir)
        return drop <= search.tolerance

    lo, hi = search.low, search.high
    if probe(hi):
        lo = hi  # the upper bound already holds: nothing to bisect
    while len(plans) < search.max_trials and hi - lo > search.resolution:
        mid = (lo + hi) / 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    passing = [i for i, d in enumerate(dirs) if (read_trial_report(d).accuracy_drop or 0.0) <= search.tolerance]
    extra = {"tolerance": search.tolerance, "bracket": [lo, hi], "trials_run": len(plans), "found": bool(passing)}
    report = finalize(spec, plans, dirs, out_dir, search.tolerance, extra)
    if not passing:
        report.notes.append(
            f"no probed sparsity kept the accuracy drop within {search.tolerance}; returned the most accurate"
        )
        (out_dir / "report.json").write_text(report.model_dump_json(indent=2))
    return report
