"""Runs one job for a Celery task: claim, download inputs, run the engine, publish, finish.

Framework-free apart from the job store; the Celery task is a thin adapter over `execute_job`. A job's
state of record is its database row, changed only through jobstore.lifecycle, by conditional updates
that hold the lease token of this attempt.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from jobstore import lifecycle
from jobstore.db import is_transient, utcnow
from jobstore.lifecycle import Recovery
from jobstore.models import JobRecord
from jobstore.repositories import jobs as jobs_repo
from prunekit.spec import JobSpec, parse_spec
from prunekit.spec.api import TERMINAL_STATUSES, JobStatus
from worker.context import WorkerContext
from worker.finishing import end_as, stop_job
from worker.inputs import download_inputs
from worker.leases import LeaseKeeper, new_lease_token
from worker.outcomes import outcome_of
from worker.progress_writer import ProgressWriter
from worker.publishing import publish_job
from worker.slots import job_threads

if TYPE_CHECKING:
    from worker.engine.api import JobOutputs

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The job could not even be claimed: the message must be retried, not dropped."""


def _handle_unclaimed(ctx: WorkerContext, job_id: str) -> str:
    """Why the job was not claimed, settling it if nobody may run it any more (cancel asked, attempts used)."""
    now = utcnow()
    with ctx.db.session() as s:
        job = jobs_repo.get_job_any(s, job_id)
        if job is None:
            return "missing"
        if job.status in TERMINAL_STATUSES:
            return "already_" + job.status
        live = job.status == JobStatus.RUNNING and job.lease_expires_at is not None and job.lease_expires_at >= now
        if live:
            # Another attempt holds a live lease (e.g. a redelivered message): never run it twice.
            return "busy"
        recovery = lifecycle.recover(s, lifecycle.lease_info(job), now, ctx.settings.max_attempts, requeue=False)
        if recovery in (Recovery.CANCELED, Recovery.GAVE_UP):
            lifecycle.notify(s, ctx.broker, job_id)
    if job.cancel_requested:
        return "canceled"
    return "failed" if job.attempts >= ctx.settings.max_attempts else "not_claimed"


def _claim(ctx: WorkerContext, job_id: str, token: str) -> JobRecord | None:
    settings = ctx.settings
    try:
        with ctx.db.session() as s:
            lease = timedelta(seconds=settings.lease_seconds)
            return lifecycle.claim(s, job_id, token, utcnow(), lease, settings.max_attempts)
    except SQLAlchemyError as exc:
        if not (isinstance(exc, DBAPIError) or is_transient(exc)):
            raise
        # Nothing has happened yet; after the claim, a lost database is handled by lease expiry instead.
        raise DatabaseUnavailable(f"cannot claim job {job_id}: {exc}") from exc


def execute_job(ctx: WorkerContext, job_id: str) -> str:
    """Run one job if we can claim it; returns what happened (for logs)."""
    token = new_lease_token()
    job = _claim(ctx, job_id, token)
    if job is None:
        outcome = _handle_unclaimed(ctx, job_id)
        log.info("job %s not run: %s", job_id, outcome)
        return outcome

    keeper = LeaseKeeper(ctx, job_id, token)
    keeper.start()
    prefix = f"jobs/{job_id}/a{job.attempts}-{secrets.token_hex(4)}/"
    try:
        return _run_claimed(ctx, job, keeper, prefix)
    finally:
        keeper.stop()


def _run_engine(
    ctx: WorkerContext, job: JobRecord, spec: JobSpec, writer: ProgressWriter, keeper: LeaseKeeper, tmpdir: Path
) -> JobOutputs:
    from worker.engine.api import JobInputs, default_limits, run_job  # torch is imported here, in the worker only

    model_path, data_path = download_inputs(ctx, job, tmpdir / "in")
    if spec.kind == "sweep":
        # Each trial is claimed from the job_trials table by this task or any `run_trial` task.
        from worker.sweeps import run_distributed_sweep

        return run_distributed_sweep(ctx, job, spec, writer, keeper, model_path, data_path, tmpdir)
    out_dir = tmpdir / "out"
    out_dir.mkdir()
    return run_job(
        JobInputs(model_path=model_path, spec=spec, data_path=data_path),
        out_dir,
        progress=writer,
        isolate=ctx.settings.engine_isolate,
        limits=default_limits(spec.device, ctx.settings.sandbox_memory_bytes, job_threads(ctx.settings)),
    )


def _run_claimed(ctx: WorkerContext, job: JobRecord, keeper: LeaseKeeper, prefix: str) -> str:
    writer = ProgressWriter(ctx, job.id, keeper.token, keeper)
    work_root = ctx.settings.work_dir
    if work_root is not None:
        work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{job.id}-", dir=work_root) as tmp:
        try:
            outputs = _run_engine(ctx, job, parse_spec(job.spec), writer, keeper, Path(tmp))
            writer.flush_final()
        except Exception as exc:  # every failure is mapped by the one table in worker.outcomes
            return end_as(keeper, outcome_of(exc, job.id, ctx.settings))
        if keeper.lost.is_set():
            return "lease_lost"
        if keeper.cancel_requested.is_set():
            return stop_job(keeper, lifecycle.CANCELED_BY_REQUEST)
        return publish_job(keeper, job, prefix, outputs)
