"""Trials shared by sweeps and searches: one compress spec per point, its summary, and picking the result."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunekit.spec import JobSpec, MaskPruningSpec, RegularizersSpec
from prunekit.spec.report import Report, Trial
from worker.engine.analysis.pareto import accuracy_vs_sparsity, mark_pareto
from worker.engine.errors import EngineError, UnsupportedError

# Extra report fields computed from all trials (e.g. a sweep's grid points); "notes" are appended.
Summarizer = Callable[[list[Trial]], dict[str, Any]]


@dataclass
class TrialPlan:
    name: str
    params: dict[str, Any]
    spec: JobSpec = field(repr=False)


def trial_spec(
    base: JobSpec,
    sparsity: float,
    regularizers: RegularizersSpec | None = None,
    schedule: str | None = None,
) -> JobSpec:
    """A compress spec derived from an analysis spec, with one grid point's settings."""
    if not isinstance(base.pruning, MaskPruningSpec):
        raise UnsupportedError(f"sweeps and searches need a mask pruning method, not '{base.pruning.method}'")
    pruning = base.pruning.model_copy(update={"sparsity": sparsity})
    if schedule is not None:
        pruning.schedule = pruning.schedule.model_copy(update={"kind": schedule})
    finetune = base.finetune
    if regularizers is not None:
        finetune = finetune.model_copy(update={"regularizers": regularizers})
    return base.model_copy(
        update={
            "kind": "compress",
            "pruning": pruning,
            "finetune": finetune,
            "sweep": None,
            "search": None,
            "sensitivity": None,
        }
    )


def trial_from_report(plan: TrialPlan, report: Report) -> Trial:
    after = report.after
    return Trial(
        name=plan.name,
        params=plan.params,
        sparsity=report.sparsity.global_sparsity,
        train_accuracy=after.train.accuracy if after else None,
        val_accuracy=after.val.accuracy if after else None,
        train_loss=after.train.loss if after else None,
        val_loss=after.val.loss if after else None,
        gap=after.gap if after else None,
        accuracy_drop=report.accuracy_drop,
        latency_ms=report.latency_after.median_ms if report.latency_after else None,
        artifact_bytes=report.size_after.artifact_zipped_bytes,
    )


def read_trial_report(trial_dir: Path) -> Report:
    path = trial_dir / "report.json"
    if not path.exists():
        raise EngineError(f"trial {trial_dir.name} produced no report")
    return Report.model_validate(json.loads(path.read_text()))


def pick_best(trials: list[Trial], max_drop: float | None) -> int:
    """Index of the sparsest trial within the accuracy tolerance; else the most accurate one."""
    ok = [
        i
        for i, t in enumerate(trials)
        if max_drop is None or (t.accuracy_drop is not None and t.accuracy_drop <= max_drop)
    ]
    if ok and max_drop is not None:
        return max(ok, key=lambda i: (trials[i].sparsity, trials[i].val_accuracy or 0.0))
    return max(range(len(trials)), key=lambda i: (trials[i].val_accuracy or 0.0, trials[i].sparsity))


def finalize(
    spec: JobSpec,
    plans: list[TrialPlan],
    trial_dirs: list[Path],
    out_dir: Path,
    max_drop: float | None,
    extra: dict[str, Any] | None = None,
    summarize: Summarizer | None = None,
) -> Report:
    """Collect trial reports, mark the Pareto front, publish the chosen trial's artifact and the job report."""
    reports = [read_trial_report(d) for d in trial_dirs]
    trials = [trial_from_report(p, r) for p, r in zip(plans, reports, strict=True)]
    mark_pareto(trials, accuracy_vs_sparsity())
    best = pick_best(trials, max_drop)
    chosen, chosen_dir = reports[best], trial_dirs[best]
    out_dir.mkdir(parents=True, exist_ok=True)
    if chosen.artifact_name:
        shutil.copyfile(chosen_dir / chosen.artifact_name, out_dir / chosen.artifact_name)
    more = summarize(trials) if summarize else {}
    report = chosen.model_copy(
        update={
            **more,
            "kind": spec.kind,
            "spec": spec.model_dump(mode="json"),
            "trials": trials,
            "extra": {**chosen.extra, **(extra or {}), "chosen_trial": trials[best].name},
            "notes": [
                *chosen.notes,
                f"headline numbers are those of the chosen trial '{trials[best].name}'",
                *more.get("notes", []),
            ],
        }
    )
    (out_dir / "report.json").write_text(report.model_dump_json(indent=2))
    return report
