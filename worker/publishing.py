"""Publishing results: upload under an attempt's own prefix, then point the row at it in one conditional update."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from jobstore.models import JobRecord
from jobstore.repositories import jobs as jobs_repo
from jobstore.storage import Storage
from prunekit.spec.api import JobStatus
from worker.engine.errors import EngineError
from worker.finishing import finish_with_retry, notify_soon
from worker.leases import LeaseKeeper

if TYPE_CHECKING:
    from worker.engine.api import JobOutputs

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,100}$")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def check_artifact_name(name: str) -> str:
    """The artifact's file name, if it is safe as a storage key's last part (the engine picks it)."""
    if not SAFE_NAME.match(name):
        raise EngineError(f"the engine wrote an artifact with an unexpected name ({name[:40]!r})")
    return name


def upload_outputs(storage: Storage, prefix: str, outputs: JobOutputs) -> dict[str, Any]:
    """Upload the artifact, report.json and report.html under `prefix`; returns the row values naming them."""
    values: dict[str, Any] = {}
    if outputs.artifact_path is not None:
        path = Path(outputs.artifact_path)
        name = check_artifact_name(path.name)
        values.update(
            artifact_key=prefix + name,
            artifact_name=name,
            artifact_size=path.stat().st_size,
            artifact_sha256=_sha256(path),
        )
        storage.put_file(prefix + name, path)
    storage.put_file(prefix + "report.json", Path(outputs.report_path))
    values["report_key"] = prefix + "report.json"
    html = outputs.html_path
    if html is not None and Path(html).is_file():
        storage.put_file(prefix + "report.html", Path(html))
        values["report_html_key"] = prefix + "report.html"
    return values


def publish_job(keeper: LeaseKeeper, job: JobRecord, prefix: str, outputs: JobOutputs) -> str:
    """Upload the job's results and mark it succeeded (or canceled, if a cancel won); returns the outcome."""
    storage, report = keeper.ctx.storage, outputs.report

    def durations(s: Session, recorded: JobStatus) -> None:
        if recorded == JobStatus.SUCCEEDED:
            jobs_repo.add_stage_durations(s, job.id, dict(report.stage_seconds))

    try:
        values = upload_outputs(storage, prefix, outputs)
        values.update(
            gate_status=report.status,
            gates=[g.model_dump(mode="json") for g in report.gates],
            stage=None,
            percent=100.0,
        )
        recorded = finish_with_retry(
            keeper,
            JobStatus.SUCCEEDED,
            f"succeeded ({report.status})",
            canceled_message="canceled by request; the result was discarded",
            after=durations,
            **values,
        )
    except BaseException:
        storage.delete_prefix(prefix)
        raise
    if recorded != JobStatus.SUCCEEDED:
        storage.delete_prefix(prefix)
        if recorded is None:
            return "lease_lost"
        notify_soon(keeper.ctx, job.id)
        return str(recorded)
    # Earlier attempts that died mid-upload may have left files: the job has exactly one artifact.
    for key in storage.list(f"jobs/{job.id}/"):
        if not key.startswith(prefix):
            storage.delete(key)
    notify_soon(keeper.ctx, job.id)
    return str(JobStatus.SUCCEEDED)
