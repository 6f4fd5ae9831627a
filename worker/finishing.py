"""Ending a claimed job: the terminal update retried through database blips, then the webhook."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from jobstore import lifecycle
from jobstore.db import utcnow
from jobstore.repositories import jobs as jobs_repo
from prunekit.spec.api import TERMINAL_STATUSES, ErrorCode, JobStatus
from worker.context import WorkerContext
from worker.heartbeat import retry_transient
from worker.leases import LeaseKeeper
from worker.outcomes import Outcome

log = logging.getLogger(__name__)


def _finished_at(session: Session, job_id: str, now: datetime) -> JobStatus | None:
    """The job's terminal state if it was written with exactly our `now` (by us), else None."""
    job = jobs_repo.get_job_any(session, job_id)
    return job.status if job is not None and job.status in TERMINAL_STATUSES and job.finished_at == now else None


def finish_with_retry(
    keeper: LeaseKeeper,
    status: JobStatus,
    message: str,
    canceled_message: str = lifecycle.CANCELED_BY_REQUEST,
    after: Callable[[Session, JobStatus], None] | None = None,
    **values: Any,
) -> JobStatus | None:
    """`lifecycle.finish` (plus `after` in its transaction), retried through transient errors while the lease lasts.

    Returns the state recorded (`canceled` if a cancel was accepted meanwhile), or None when the lease is lost.
    """
    ctx, job_id, token, now = keeper.ctx, keeper.job_id, keeper.token, utcnow()
    tries = 0

    def once() -> JobStatus | None:
        nonlocal tries
        tries += 1
        with ctx.db.session() as s:
            recorded = lifecycle.finish(s, job_id, token, status, now, message, canceled_message, **values)
            if recorded is not None and after is not None:
                after(s, recorded)
            elif recorded is None and tries > 1:  # an earlier try may have committed before its connection dropped
                return _finished_at(s, job_id, now)
        return recorded

    return retry_transient(once, keeper.deadline(), f"job {job_id} finish")


def notify(ctx: WorkerContext, job_id: str) -> None:
    """Queue the webhook of a job that just ended (if it has one)."""
    with ctx.db.session() as s:
        lifecycle.notify(s, ctx.broker, job_id)


def notify_soon(ctx: WorkerContext, job_id: str) -> None:
    """`notify`, retrying transient database errors for up to one lease period."""
    deadline = time.monotonic() + ctx.settings.lease_seconds
    retry_transient(lambda: notify(ctx, job_id), deadline, f"job {job_id} webhook")


def end_job(keeper: LeaseKeeper, status: JobStatus, message: str, **values: Any) -> bool:
    """Finish the job as `status` with an event saying `message` (a cancel accepted meanwhile wins)."""
    recorded = finish_with_retry(keeper, status, message, **values)
    if recorded is not None:
        notify_soon(keeper.ctx, keeper.job_id)
    return recorded is not None


def fail_job(keeper: LeaseKeeper, code: ErrorCode, message: str) -> str:
    """End the job as failed with `code` and the user-facing `message`; returns the outcome for logs."""
    if not end_job(keeper, JobStatus.FAILED, f"failed: {code}", error_code=code, error_message=message):
        return "lease_lost"
    return "failed"


def stop_job(keeper: LeaseKeeper, message: str) -> str:
    """End a job whose cancel was seen (or whose lease was lost: then nothing is written)."""
    if keeper.lost.is_set():
        log.warning("job %s: lease lost, this attempt stops without writing", keeper.job_id)
        return "lease_lost"
    end_job(keeper, JobStatus.CANCELED, message or "canceled")
    return "canceled"


def end_as(keeper: LeaseKeeper, outcome: Outcome) -> str:
    """End the job the way `outcome` (from worker.outcomes) says."""
    if outcome.status == JobStatus.CANCELED or outcome.code is None:
        return stop_job(keeper, outcome.message)
    return fail_job(keeper, outcome.code, outcome.message)
