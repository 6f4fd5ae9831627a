"""Job kinds: compress, the analysis kinds (sensitivity, sweep, search) built on it, and the dry_run check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from worker.engine.analysis.search import run_search
from worker.engine.analysis.sensitivity import run_sensitivity
from worker.engine.analysis.sweep import run_sweep
from worker.engine.dry_run import DRY_RUN_WEIGHTS, run_dry_run
from worker.engine.pipeline import run_compress
from worker.engine.progress import STAGE_WEIGHTS, ProgressFn, StageProgress

Runner = Callable[[JobSpec, Path, Path | None, Path, StageProgress], Report]

# kind -> (runner, stage weights for the overall percent)
KINDS: dict[str, tuple[Runner, dict[str, float]]] = {
    "compress": (run_compress, STAGE_WEIGHTS),
    "sensitivity": (run_sensitivity, {"load": 5, "analyze": 90, "report": 5}),
    "sweep": (run_sweep, {"trials": 95, "report": 5}),
    "search": (run_search, {"trials": 95, "report": 5}),
    "dry_run": (run_dry_run, DRY_RUN_WEIGHTS),
}


def run_kind(spec: JobSpec, model_path: Path, data_path: Path | None, out_dir: Path, sink: ProgressFn | None) -> Report:
    """Run the job kind the spec names; each writes report.json (and usually an artifact) into out_dir."""
    runner, weights = KINDS[spec.kind]
    progress = StageProgress(sink, weights)
    report = runner(spec, model_path, data_path, out_dir, progress)
    progress.update("report", 1.0, "done")
    return report
