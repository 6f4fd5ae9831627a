"""The job's lifecycle: every change of a job's status is one of these named transitions.

Each is a conditional UPDATE (jobstore.repositories.jobs) plus the state event that says why, in the
caller's transaction, so concurrent API calls, workers and sweepers cannot both win. `notify` queues the
webhook of a job that just ended. Who makes which transition: docs/design/architecture.md.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy.orm import Session

from jobstore.models import JobRecord
from jobstore.repositories import jobs as repo
from jobstore.repositories.jobs import LeaseInfo
from jobstore.webhooks import events as webhook_events
from prunekit.spec.api import TERMINAL_STATUSES, ErrorCode, EventKind, JobStatus, WebhookState

log = logging.getLogger(__name__)

CANCELED_BY_REQUEST = "canceled by request"


class WebhookSender(Protocol):
    def send_webhook(self, job_id: str, queue: str) -> None: ...


class CancelOutcome(StrEnum):
    CANCELED = "canceled"  # it was queued: it is canceled now
    REQUESTED = "requested"  # it runs: its worker stops at its next check
    ALREADY_ENDED = "already_ended"
    RACING = "racing"  # it kept changing state under us; the caller may try again


class Recovery(StrEnum):
    """What became of a job nobody runs any more (lease expired, or found unclaimable)."""

    CANCELED = "canceled"
    GAVE_UP = "gave_up"
    REQUEUED = "requeued"
    NOTHING = "nothing"  # someone else got there first


def claim(
    session: Session, job_id: str, token: str, now: datetime, lease: timedelta, max_attempts: int
) -> JobRecord | None:
    """queued (or running with an expired lease) -> running under `token`; None if it cannot be claimed."""
    if not repo.claim(session, job_id, token, now, lease, max_attempts):
        return None
    job = repo.get_job_any(session, job_id)
    if job is not None:
        repo.add_event(session, job_id, EventKind.STATE, f"running (attempt {job.attempts} of {max_attempts})")
    return job


def renew(session: Session, job_id: str, token: str, until: datetime) -> bool | None:
    """Extend our lease; returns whether cancel was requested, or None once the lease is not ours."""
    return repo.renew_lease(session, job_id, token, until)


def finish(
    session: Session,
    job_id: str,
    token: str,
    status: JobStatus,
    now: datetime,
    message: str,
    canceled_message: str = CANCELED_BY_REQUEST,
    **values: Any,
) -> JobStatus | None:
    """running -> `status` (or canceled, if a cancel was accepted meanwhile); None when the lease was lost."""
    recorded = repo.finish(session, job_id, token, status, now, **values)
    if recorded is not None:
        repo.add_event(session, job_id, EventKind.STATE, message if recorded == status else canceled_message)
    return recorded


def request_cancel(session: Session, job: JobRecord, now: datetime) -> CancelOutcome:
    """queued -> canceled at once, or flag a running job; a flag accepted here is always honoured by `finish`."""
    for _ in range(3):  # the job may move from queued to running between the two updates
        if job.status in TERMINAL_STATUSES:
            return CancelOutcome.ALREADY_ENDED
        if repo.cancel_queued(session, job.id, now):
            repo.add_event(session, job.id, EventKind.STATE, "canceled before it started", ts=now)
            return CancelOutcome.CANCELED
        if repo.request_cancel(session, job.id, now):
            repo.add_event(session, job.id, EventKind.STATE, "cancel requested", ts=now)
            return CancelOutcome.REQUESTED
        session.refresh(job)
    return CancelOutcome.RACING


def give_up_message(attempts: int) -> str:
    return (
        f"the job's worker stopped (killed, out of memory or crashed) during each of its {attempts} attempts; "
        "it will not be retried. Try a smaller model or batch size, or ask the operator for the worker logs."
    )


def give_up(session: Session, job_id: str, attempts: int, now: datetime) -> bool:
    """Free job with its attempts used up -> failed (worker_lost)."""
    msg = give_up_message(attempts)
    if not repo.fail_unclaimable(session, job_id, now, ErrorCode.WORKER_LOST, msg):
        return False
    repo.add_event(session, job_id, EventKind.STATE, msg)
    return True


def cancel_abandoned(session: Session, job_id: str, now: datetime, message: str) -> bool:
    """Cancel-requested job whose worker is gone (or that never started) -> canceled."""
    if not repo.cancel_unclaimable(session, job_id, now):
        return False
    repo.add_event(session, job_id, EventKind.STATE, message)
    return True


def requeue_lost(session: Session, info: LeaseInfo, now: datetime) -> bool:
    """running with an expired lease -> queued (unsent), for the winner to send again."""
    if not repo.requeue_expired(session, info.id, info.lease_token, now):
        return False
    msg = f"requeued: the worker of attempt {info.attempts} stopped answering"
    repo.add_event(session, info.id, EventKind.STATE, msg)
    return True


def recover(session: Session, info: LeaseInfo, now: datetime, max_attempts: int, requeue: bool) -> Recovery:
    """Settle a job nobody runs: cancel it if asked, fail it once its attempts are used, else requeue it."""
    if info.cancel_requested:
        msg = "canceled (its worker had stopped)" if requeue else "canceled"
        return Recovery.CANCELED if cancel_abandoned(session, info.id, now, msg) else Recovery.NOTHING
    if info.attempts >= max_attempts:
        return Recovery.GAVE_UP if give_up(session, info.id, info.attempts, now) else Recovery.NOTHING
    if requeue and requeue_lost(session, info, now):
        return Recovery.REQUEUED
    return Recovery.NOTHING


def notify(session: Session, sender: WebhookSender, job_id: str) -> bool:
    """Queue the webhook of a job that just ended (if it has one); commits `session` first. Returns whether sent."""
    job = repo.get_job_any(session, job_id)
    if job is None or not job.webhook_url:
        return False
    if not webhook_events.wanted(job):  # the job's filter leaves this end out: nothing to send, nothing pending
        return False
    repo.set_webhook_state(session, job_id, WebhookState.PENDING)
    queue = job.queue
    session.commit()  # pending before the message exists: a lost message is found and resent by the sweeper
    try:
        sender.send_webhook(job_id, queue)
    except Exception:  # the job's state is final either way; a lost notification is logged and resent later
        log.exception("could not enqueue the webhook of job %s", job_id)
        return False
    return True


def lease_info(job: JobRecord) -> LeaseInfo:
    """The lease facts `recover` decides on, from a loaded row."""
    return LeaseInfo(job.id, job.lease_token, job.attempts, job.cancel_requested, job.queue)
