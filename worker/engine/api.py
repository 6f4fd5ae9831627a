"""Entry points of the engine, used by the local CLI and the Celery tasks."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prunekit.spec import JobSpec
from prunekit.spec.report import Isolation, Report
from worker.engine.errors import EngineError, JobCanceledError
from worker.engine.progress import ProgressEvent, ProgressFn


@dataclass
class JobInputs:
    model_path: Path
    spec: JobSpec
    data_path: Path | None = None


@dataclass
class JobOutputs:
    report: Report
    report_path: Path  # out_dir/report.json
    artifact_path: Path | None  # out_dir/model.<ext>; None only for analysis-only kinds (sensitivity)
    html_path: Path | None = None  # out_dir/report.html when rendering is available


def run_job(
    inputs: JobInputs,
    out_dir: Path,
    progress: ProgressFn | None = None,
    isolate: bool = True,
    limits: Any | None = None,
    render_report: bool = True,
    threads: int | None = None,
) -> JobOutputs:
    """Run one job of any kind; raises worker.engine.errors.EngineError subclasses on bad input.

    `progress` receives ProgressEvent(stage, percent, message, metrics); raising JobCanceledError
    from it cancels the job. With `isolate`, the model is loaded and processed in a sandboxed child
    process (resource limits, scrubbed environment, no network where the OS allows it).
    `render_report=False` skips report.html (a sweep's trials: only the sweep's own report is shown).
    `threads` caps torch's CPU threads (in the sandbox: default_limits' default when `limits` has none).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isolate:
        limits = limits or default_limits(inputs.spec.device, threads=threads)
        if threads is not None:
            limits = replace(limits, threads=threads)
        isolation = _run_in_sandbox(inputs, out_dir, progress, limits)
    else:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        execute_job(inputs.spec, inputs.model_path, inputs.data_path, out_dir, progress)
        isolation = Isolation(
            child_process=False,
            network="not isolated: run in-process",
            filesystem="not isolated: run in-process",
            environment="inherited (in-process)",
        )
    return _finish(out_dir, isolation, render_report)


def execute_job(
    spec: JobSpec, model_path: Path, data_path: Path | None, out_dir: Path, progress: ProgressFn | None
) -> None:
    """Dispatch on the job kind; writes the artifact and report.json into out_dir."""
    from worker.engine import kinds

    kinds.run_kind(spec, model_path, data_path, out_dir, progress)


def child_entry(payload: dict[str, Any], emit: Any) -> dict[str, Any]:
    """Runs inside the sandboxed child: rebuild the inputs and execute the job."""
    spec = JobSpec.model_validate(payload["spec"])
    data_path = Path(payload["data_path"]) if payload.get("data_path") else None

    def forward(event: ProgressEvent) -> None:
        emit(event.to_dict())

    execute_job(spec, Path(payload["model_path"]), data_path, Path(payload["out_dir"]), forward)
    return {"ok": True}


def _run_in_sandbox(inputs: JobInputs, out_dir: Path, progress: ProgressFn | None, limits: Any) -> Isolation:
    from worker.engine.isolation import run_isolated

    model_path = str(Path(inputs.model_path).resolve())
    data_path = str(Path(inputs.data_path).resolve()) if inputs.data_path else None
    out = str(out_dir.resolve())
    payload = {
        "spec": inputs.spec.model_dump(mode="json"),
        "model_path": model_path,
        "data_path": data_path,
        "out_dir": out,
    }

    def on_event(event: dict[str, Any]) -> None:
        if progress is not None:
            progress(ProgressEvent(**event))

    readable = (model_path, data_path) if data_path else (model_path,)
    _, isolation = run_isolated(
        "worker.engine.api:child_entry",
        payload,
        limits,
        on_event,
        preload=("torch",),
        readable=readable,
        writable=(out,),
    )
    return isolation


def default_limits(device: str = "auto", memory_bytes: int = 8 * 1024**3, threads: int | None = None) -> Any:
    """Sandbox limits for a job: `memory_bytes` above the interpreter (8 GiB), 24 h of CPU, 8 GiB per file,
    `threads` CPU threads (default: threads.default_threads() for one job at a time)."""
    import torch

    from worker.engine.isolation import SandboxLimits
    from worker.engine.threads import default_threads

    uses_cuda = device != "cpu" and torch.cuda.is_available()
    return SandboxLimits(
        memory_bytes=memory_bytes,
        cpu_seconds=24 * 3600,  # CPU time of all threads; the service also enforces wall-clock limits
        file_size_bytes=8 * 1024**3,
        uses_cuda=uses_cuda,
        threads=threads if threads is not None else default_threads(),
    )


def _finish(out_dir: Path, isolation: Isolation, render_report: bool) -> JobOutputs:
    report_path = out_dir / "report.json"
    if not report_path.exists():
        raise EngineError("the job ended without writing report.json")
    report = Report.model_validate(json.loads(report_path.read_text()))
    report.isolation = isolation
    report_path.write_text(report.model_dump_json(indent=2))
    artifact = out_dir / report.artifact_name if report.artifact_name else None
    html = render_html(report, out_dir) if render_report else None
    return JobOutputs(report=report, report_path=report_path, artifact_path=artifact, html_path=html)


def render_html(report: Report, out_dir: Path) -> Path | None:
    """Write out_dir/report.html when the renderer (matplotlib) is installed; None otherwise."""
    try:
        from prunekit.reporting.html import render_report_html
    except ImportError:
        return None
    path = out_dir / "report.html"
    path.write_text(render_report_html(report.model_dump(mode="json")), encoding="utf-8")
    return path


__all__ = [
    "EngineError",
    "JobCanceledError",
    "JobInputs",
    "JobOutputs",
    "child_entry",
    "execute_job",
    "render_html",
    "run_job",
]
