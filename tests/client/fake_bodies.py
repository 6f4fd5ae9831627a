"""The fake API's bodies, built from the API's own models (prunekit/spec/api.py) the way the real server builds them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from prunekit.spec.api import FileInfo, FileKind, Job, JobStatus, Problem, ProblemFieldError, Stage, job_links

# The stages a compress job reports, in the worker's order (worker/engine/progress.py STAGE_WEIGHTS);
# `analyze` is the sensitivity kind's and `trials` the sweep's and search's.
COMPRESS_STAGES = [s for s in Stage if s not in (Stage.ANALYZE, Stage.TRIALS)]


def now() -> datetime:
    return datetime.now(UTC)


def new_job(
    job_id: str,
    spec: dict[str, Any],
    model_id: str = "fil_x",
    data_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Job:
    """A job as just submitted: queued, nothing run yet."""
    created = now()
    return Job(
        id=job_id,
        status=JobStatus.QUEUED,
        stage=None,
        percent=0.0,
        kind=str(spec.get("kind", "compress")),
        queue="cpu",
        created_at=created,
        started_at=None,
        finished_at=None,
        updated_at=created,
        attempts=0,
        error=None,
        gate_status=None,
        gates=[],
        model_file_id=model_id,
        data_file_id=data_id,
        spec=spec,
        artifact=None,
        links=job_links(job_id, has_artifact=False, has_report=False),
        metadata=dict(metadata or {}),
    )


def new_file(file_id: str, data: bytes, name: str, kind: str, ttl: timedelta = timedelta(days=7)) -> FileInfo:
    """A file as just uploaded, expiring after `ttl` as the real server's do."""
    created = now()
    return FileInfo(
        id=file_id,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        name=name,
        kind=FileKind(kind),
        created_at=created,
        expires_at=created + ttl,
        in_use=False,
    )


def updated(job: Job, **changes: Any) -> Job:
    """The job with `changes` applied, validated like a server body."""
    return Job.model_validate({**dict(job), **changes, "updated_at": now()})


def progress_script(steps: int) -> list[dict[str, Any]]:
    """Running snapshots spread over the compress stages, in their order."""
    n = len(COMPRESS_STAGES)
    return [
        {
            "status": JobStatus.RUNNING,
            "stage": COMPRESS_STAGES[min(i * n // max(steps, 1), n - 1)],
            "percent": round(100 * i / steps, 1),
        }
        for i in range(steps)
    ]


def problem(status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> Problem:
    return Problem(
        type=f"https://prunekit.dev/problems/{code}",
        title=code.replace("_", " "),
        status=status,
        detail=detail,
        code=code,
        instance="/",  # set to the request's path when sent
        errors=None if errors is None else [ProblemFieldError.model_validate(e) for e in errors],
    )
