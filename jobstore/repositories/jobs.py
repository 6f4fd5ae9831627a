"""SQL for jobs and their events: the API's queries and the workers' conditional state changes.

Every state change is one conditional UPDATE, so concurrent API calls, workers and sweepers
cannot both win (a job never runs twice at once, a finished job is never overwritten).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, delete, exists, func, literal, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from jobstore.db import affected_rows
from jobstore.models import JobEvent, JobMetadataRecord, JobRecord, JobTrial, StageDuration
from prunekit.spec.api import ErrorCode, EventKind, JobStatus, WebhookState

# --- API side -------------------------------------------------------------------------------


def insert_job(session: Session, job: JobRecord) -> JobRecord:
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str, owner: str) -> JobRecord | None:
    return session.scalar(select(JobRecord).where(JobRecord.id == job_id, JobRecord.owner == owner))


_JOBS, _META = JobRecord.__table__, JobMetadataRecord.__table__
# Built once: GET /v1/jobs/{id} is polled by CI fleets, and building and caching a statement costs per call.
_READ_JOB = (
    select(_JOBS, _META.c.key.label("meta_key"), _META.c.value.label("meta_value"))
    .outerjoin(_META, _META.c.job_id == _JOBS.c.id)
    .where(_JOBS.c.id == bindparam("id"), _JOBS.c.owner == bindparam("owner"))
    .order_by(_META.c.key)
)


def read_job(conn: Connection, job_id: str, owner: str) -> JobRecord | None:
    """get_job for read-only polls: one Core query for the job and its metadata, into a detached JobRecord.

    The ORM load (identity map, a second query for the metadata) cost about three times as much CPU.
    """
    return _job_of_rows(job_id, conn.execute(_READ_JOB, {"id": job_id, "owner": owner}).all())


async def read_job_async(conn: AsyncConnection, job_id: str, owner: str) -> JobRecord | None:
    """read_job on the event loop (PostgreSQL, psycopg's async mode): the same statement and the same record."""
    return _job_of_rows(job_id, (await conn.execute(_READ_JOB, {"id": job_id, "owner": owner})).all())


def _job_of_rows(job_id: str, rows: Sequence[Row[Any]]) -> JobRecord | None:
    if not rows:
        return None
    columns = {c.key: rows[0]._mapping[c] for c in _JOBS.c}
    pairs = [(r.meta_key, r.meta_value) for r in rows if r.meta_key is not None]  # None: the outer join found none
    meta = [JobMetadataRecord(job_id=job_id, key=k, value=v) for k, v in pairs]
    return JobRecord(**columns, meta_rows=meta)


def get_job_any(session: Session, job_id: str) -> JobRecord | None:
    return session.scalar(select(JobRecord).where(JobRecord.id == job_id))


def find_by_idempotency_key(session: Session, owner: str, key: str) -> JobRecord | None:
    return session.scalar(select(JobRecord).where(JobRecord.owner == owner, JobRecord.idempotency_key == key))


def add_metadata(session: Session, job_id: str, metadata: dict[str, str]) -> None:
    """Store a new job's metadata pairs, one row each."""
    session.add_all(JobMetadataRecord(job_id=job_id, key=k, value=v) for k, v in metadata.items())


@dataclass(frozen=True)
class JobFilter:
    """What a job list keeps: any of `statuses` (all when empty), one kind, and every metadata pair."""

    statuses: tuple[JobStatus, ...] = ()
    kind: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()


def _conditions(filters: JobFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if filters.statuses:
        conds.append(JobRecord.status.in_(filters.statuses))
    if filters.kind is not None:
        conds.append(JobRecord.kind == filters.kind)
    for key, value in filters.metadata:
        meta = JobMetadataRecord
        conds.append(exists().where(meta.job_id == JobRecord.id, meta.key == key, meta.value == value))
    return conds


def list_jobs(
    session: Session, owner: str, filters: JobFilter | None, limit: int, before_pk: int | None
) -> Sequence[JobRecord]:
    """The owner's jobs matching `filters`, newest first, below `before_pk` (the cursor)."""
    stmt = select(JobRecord).where(JobRecord.owner == owner, *_conditions(filters or JobFilter()))
    if before_pk is not None:
        stmt = stmt.where(JobRecord.pk < before_pk)
    return session.scalars(stmt.order_by(JobRecord.pk.desc()).limit(limit)).all()


def list_newer_jobs(session: Session, owner: str, limit: int, after_pk: int) -> Sequence[JobRecord]:
    """The owner's `limit` jobs just above `after_pk` (the jobs page's newer page), newest first."""
    stmt = select(JobRecord).where(JobRecord.owner == owner, JobRecord.pk > after_pk)
    return list(reversed(session.scalars(stmt.order_by(JobRecord.pk.asc()).limit(limit)).all()))


def mark_enqueued(session: Session, job_id: str, now: datetime) -> bool:
    """Record that the job's message was sent (unsent queued jobs are resent by the sweeper)."""
    stmt = (
        update(JobRecord)
        .where(JobRecord.id == job_id, JobRecord.status == JobStatus.QUEUED, JobRecord.enqueued_at.is_(None))
        .values(enqueued_at=now)
    )
    return affected_rows(session, stmt) == 1


def unmark_enqueued(session: Session, job_id: str) -> None:
    session.execute(update(JobRecord).where(JobRecord.id == job_id).values(enqueued_at=None))


def cancel_queued(session: Session, job_id: str, now: datetime) -> bool:
    stmt = (
        update(JobRecord)
        .where(JobRecord.id == job_id, JobRecord.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELED, finished_at=now, updated_at=now, cancel_requested=True)
    )
    return affected_rows(session, stmt) == 1


def request_cancel(session: Session, job_id: str, now: datetime) -> bool:
    stmt = (
        update(JobRecord)
        .where(JobRecord.id == job_id, JobRecord.status == JobStatus.RUNNING)
        .values(cancel_requested=True, updated_at=now)
    )
    return affected_rows(session, stmt) == 1


def delete_job(session: Session, job: JobRecord) -> None:
    session.execute(delete(JobEvent).where(JobEvent.job_id == job.id))
    session.execute(delete(JobTrial).where(JobTrial.job_id == job.id))
    session.execute(delete(JobMetadataRecord).where(JobMetadataRecord.job_id == job.id))
    session.delete(job)


def add_event(
    session: Session,
    job_id: str,
    kind: EventKind,
    message: str = "",
    *,
    stage: str | None = None,
    percent: float | None = None,
    data: dict[str, Any] | None = None,
    ts: datetime | None = None,
) -> None:
    ev = JobEvent(job_id=job_id, kind=kind, message=message, stage=stage, percent=percent, data=data or {})
    if ts is not None:
        ev.ts = ts
    session.add(ev)


def list_events(session: Session, job_id: str, after: int, limit: int) -> Sequence[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after).order_by(JobEvent.seq).limit(limit)
    return session.scalars(stmt).all()


def count_by_status(session: Session) -> list[tuple[str, str, int]]:
    stmt = select(JobRecord.status, JobRecord.queue, func.count()).group_by(JobRecord.status, JobRecord.queue)
    return [(s, q, int(n)) for s, q, n in session.execute(stmt).all()]


def stage_duration_stats(session: Session) -> list[tuple[str, int, float]]:
    stmt = select(StageDuration.stage, func.count(), func.sum(StageDuration.seconds)).group_by(StageDuration.stage)
    return [(s, int(n), float(t or 0.0)) for s, n, t in session.execute(stmt).all()]


# --- worker side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseInfo:
    id: str
    lease_token: str | None
    attempts: int
    cancel_requested: bool
    queue: str


def _free(now: datetime) -> ColumnElement[bool]:
    """Nobody runs the job: it is queued, or running under a lease that has expired (its worker died)."""
    return or_(
        JobRecord.status == JobStatus.QUEUED,
        and_(JobRecord.status == JobStatus.RUNNING, JobRecord.lease_expires_at < now),
    )


def _held(job_id: str, token: str) -> tuple[ColumnElement[bool], ...]:
    """The job is running under our lease."""
    return JobRecord.id == job_id, JobRecord.lease_token == token, JobRecord.status == JobStatus.RUNNING


def claim(session: Session, job_id: str, token: str, now: datetime, lease: timedelta, max_attempts: int) -> bool:
    """Atomically take a queued job, or a running one whose lease has expired (its worker died)."""
    stmt = (
        update(JobRecord)
        .where(
            JobRecord.id == job_id,
            _free(now),
            JobRecord.cancel_requested.is_(False),
            JobRecord.attempts < max_attempts,
        )
        .values(
            status=JobStatus.RUNNING,
            attempts=JobRecord.attempts + 1,
            lease_token=token,
            lease_expires_at=now + lease,
            stage=None,
            percent=0.0,
            updated_at=now,
        )
    )
    if affected_rows(session, stmt) != 1:
        return False
    session.execute(
        update(JobRecord).where(JobRecord.id == job_id, JobRecord.started_at.is_(None)).values(started_at=now)
    )
    return True


def renew_lease(session: Session, job_id: str, token: str, until: datetime) -> bool | None:
    """Extend our lease; returns whether cancel was requested, or None when the lease is no longer ours."""
    stmt = update(JobRecord).where(*_held(job_id, token)).values(lease_expires_at=until)
    if affected_rows(session, stmt) != 1:
        return None
    return bool(session.scalar(select(JobRecord.cancel_requested).where(JobRecord.id == job_id)))


def set_progress(session: Session, job_id: str, token: str, stage: str | None, percent: float, now: datetime) -> bool:
    stmt = update(JobRecord).where(*_held(job_id, token)).values(stage=stage, percent=percent, updated_at=now)
    return affected_rows(session, stmt) == 1


def finish(
    session: Session, job_id: str, token: str, status: JobStatus, now: datetime, **values: Any
) -> JobStatus | None:
    """Move our running job to a terminal state; returns the state recorded, None if the lease was lost.

    One conditional UPDATE: if a cancel was accepted meanwhile the row becomes `canceled` and `values` are not kept.
    """
    canceled = JobRecord.cancel_requested.is_(True)
    kept = {k: case((canceled, getattr(JobRecord, k)), else_=_bound(k, v)) for k, v in values.items()}
    stmt = (
        update(JobRecord)
        .where(*_held(job_id, token))
        .values(
            status=case((canceled, JobStatus.CANCELED), else_=status),
            finished_at=now,
            updated_at=now,
            lease_token=None,
            lease_expires_at=None,
            **kept,
        )
        .returning(JobRecord.status)
    )
    recorded: JobStatus | None = session.execute(stmt.execution_options(synchronize_session=False)).scalar_one_or_none()
    return recorded


def _bound(column: str, value: Any) -> ColumnElement[Any]:
    """A value typed like its column (JSON, UTC datetimes), for use inside a CASE."""
    return literal(value, getattr(JobRecord, column).type)


def fail_unclaimable(session: Session, job_id: str, now: datetime, code: ErrorCode, message: str) -> bool:
    """End a job nobody may run any more (attempts used up), unless someone finished it meanwhile."""
    stmt = (
        update(JobRecord)
        .where(JobRecord.id == job_id, _free(now))
        .values(
            status=JobStatus.FAILED,
            finished_at=now,
            updated_at=now,
            lease_token=None,
            lease_expires_at=None,
            error_code=code,
            error_message=message,
        )
    )
    return affected_rows(session, stmt) == 1


def cancel_unclaimable(session: Session, job_id: str, now: datetime) -> bool:
    """End a cancel-requested job whose worker is gone (or that was never started)."""
    stmt = (
        update(JobRecord)
        .where(
            JobRecord.id == job_id,
            JobRecord.cancel_requested.is_(True),
            or_(
                JobRecord.status == JobStatus.QUEUED,
                and_(JobRecord.status == JobStatus.RUNNING, JobRecord.lease_expires_at < now),
            ),
        )
        .values(status=JobStatus.CANCELED, finished_at=now, updated_at=now, lease_token=None, lease_expires_at=None)
    )
    return affected_rows(session, stmt) == 1


def expired_leases(session: Session, now: datetime, limit: int = 100) -> list[LeaseInfo]:
    stmt = (
        select(JobRecord.id, JobRecord.lease_token, JobRecord.attempts, JobRecord.cancel_requested, JobRecord.queue)
        .where(JobRecord.status == JobStatus.RUNNING, JobRecord.lease_expires_at < now)
        .limit(limit)
    )
    return [LeaseInfo(*row) for row in session.execute(stmt).all()]


def requeue_expired(session: Session, job_id: str, token: str | None, now: datetime) -> bool:
    """Put a job whose worker vanished back to queued (only the sweeper that wins sends it again)."""
    stmt = (
        update(JobRecord)
        .where(
            JobRecord.id == job_id,
            JobRecord.status == JobStatus.RUNNING,
            JobRecord.lease_expires_at < now,
            JobRecord.lease_token == token if token is not None else JobRecord.lease_token.is_(None),
        )
        .values(status=JobStatus.QUEUED, lease_token=None, lease_expires_at=None, enqueued_at=None, updated_at=now)
    )
    return affected_rows(session, stmt) == 1


def unsent_jobs(session: Session, older_than: datetime, limit: int = 100) -> list[tuple[str, str]]:
    """Queued jobs whose message was never sent (broker down at submission, or requeued)."""
    stmt = (
        select(JobRecord.id, JobRecord.queue)
        .where(JobRecord.status == JobStatus.QUEUED, JobRecord.enqueued_at.is_(None), JobRecord.updated_at < older_than)
        .limit(limit)
    )
    return [(i, q) for i, q in session.execute(stmt).all()]


def stale_queued_jobs(session: Session, sent_before: datetime, limit: int = 100) -> list[tuple[str, str]]:
    """Queued jobs last sent before `sent_before`, oldest first (the broker may have lost their message)."""
    stmt = (
        select(JobRecord.id, JobRecord.queue)
        .where(JobRecord.status == JobStatus.QUEUED, JobRecord.enqueued_at < sent_before)
        .order_by(JobRecord.enqueued_at)
        .limit(limit)
    )
    return [(i, q) for i, q in session.execute(stmt).all()]


def mark_resent(session: Session, job_id: str, sent_before: datetime, now: datetime) -> bool:
    """Take the resend of a stale queued job (one sweeper wins) and record its new send time."""
    stmt = (
        update(JobRecord)
        .where(JobRecord.id == job_id, JobRecord.status == JobStatus.QUEUED, JobRecord.enqueued_at < sent_before)
        .values(enqueued_at=now)
    )
    return affected_rows(session, stmt) == 1


def stale_webhooks(session: Session, idle_since: datetime, limit: int = 100) -> list[tuple[str, str]]:
    """Jobs whose webhook is pending with no event since `idle_since` (its message may be lost)."""
    recent = exists().where(JobEvent.job_id == JobRecord.id, JobEvent.ts >= idle_since)
    stmt = (
        select(JobRecord.id, JobRecord.queue)
        .where(JobRecord.webhook_state == WebhookState.PENDING, JobRecord.updated_at < idle_since, ~recent)
        .order_by(JobRecord.updated_at)
        .limit(limit)
    )
    return [(i, q) for i, q in session.execute(stmt).all()]


def waiting_messages(session: Session) -> dict[str, int]:
    """Per queue, how many messages the broker should hold: sent queued jobs plus pending webhooks."""
    jobs = select(JobRecord.queue, func.count()).where(
        JobRecord.status == JobStatus.QUEUED, JobRecord.enqueued_at.is_not(None)
    )
    hooks = select(JobRecord.queue, func.count()).where(JobRecord.webhook_state == WebhookState.PENDING)
    counts: dict[str, int] = {}
    for stmt in (jobs, hooks):
        for queue, n in session.execute(stmt.group_by(JobRecord.queue)).all():
            counts[queue] = counts.get(queue, 0) + int(n)
    return counts


def add_stage_durations(session: Session, job_id: str, seconds: dict[str, float]) -> None:
    for stage, secs in seconds.items():
        session.add(StageDuration(job_id=job_id, stage=stage[:32], seconds=float(secs)))


def set_webhook_state(session: Session, job_id: str, state: WebhookState) -> None:
    session.execute(update(JobRecord).where(JobRecord.id == job_id).values(webhook_state=state))
