"""SQL for the trials of sweep jobs: any worker claims the next trial with one conditional UPDATE.

A trial is claimable while `pending`, or `running` with an expired lease (its worker died); a claim
sets a fresh lease token, and every later change of that trial requires the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from jobstore.db import affected_rows
from jobstore.models import JobTrial
from prunekit.spec.api import FINISHED_TRIALS, ErrorCode, TrialStatus

FINISHED = FINISHED_TRIALS


def create_trials(session: Session, job_id: str, names: Sequence[str], now: datetime) -> None:
    """Insert the rows of a sweep's trials; rows that exist (an earlier attempt of the job) are kept."""
    have = set(session.scalars(select(JobTrial.idx).where(JobTrial.job_id == job_id)).all())
    for idx, name in enumerate(names):
        if idx not in have:
            session.add(
                JobTrial(
                    job_id=job_id,
                    idx=idx,
                    name=name[:255],
                    status=TrialStatus.PENDING,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
            )
    session.flush()


def list_trials(session: Session, job_id: str) -> Sequence[JobTrial]:
    stmt = select(JobTrial).where(JobTrial.job_id == job_id).order_by(JobTrial.idx)
    # Rows changed by our own conditional UPDATEs must be read again, not taken from the identity map.
    return session.scalars(stmt.execution_options(populate_existing=True)).all()


def _free(now: datetime) -> ColumnElement[bool]:
    """Nobody runs the trial: it is pending, or running under a lease that has expired (its worker died)."""
    return or_(
        JobTrial.status == TrialStatus.PENDING,
        and_(JobTrial.status == TrialStatus.RUNNING, JobTrial.lease_expires_at < now),
    )


def _held(job_id: str, idx: int, token: str) -> tuple[ColumnElement[bool], ...]:
    """The trial is running under our lease."""
    return (
        JobTrial.job_id == job_id,
        JobTrial.idx == idx,
        JobTrial.lease_token == token,
        JobTrial.status == TrialStatus.RUNNING,
    )


def _claimable(now: datetime, max_attempts: int) -> ColumnElement[bool]:
    return and_(_free(now), JobTrial.attempts < max_attempts)


def claim_next(
    session: Session, job_id: str, token: str, worker: str, now: datetime, lease: timedelta, max_attempts: int
) -> JobTrial | None:
    """Take the first claimable trial of the job; None when there is none left (or others won them all)."""
    candidates = session.scalars(
        select(JobTrial.idx)
        .where(JobTrial.job_id == job_id, _claimable(now, max_attempts))
        .order_by(JobTrial.idx)
        .limit(20)
    ).all()
    for idx in candidates:
        stmt = (
            update(JobTrial)
            .where(JobTrial.job_id == job_id, JobTrial.idx == idx, _claimable(now, max_attempts))
            .values(
                status=TrialStatus.RUNNING,
                lease_token=token,
                lease_expires_at=now + lease,
                attempts=JobTrial.attempts + 1,
                worker=worker[:128],
                started_at=now,
                updated_at=now,
            )
        )
        if affected_rows(session, stmt) == 1:
            session.commit()
            stmt2 = select(JobTrial).where(JobTrial.job_id == job_id, JobTrial.idx == idx)
            return session.scalar(stmt2.execution_options(populate_existing=True))
    return None


def renew(session: Session, job_id: str, idx: int, token: str, until: datetime) -> bool:
    stmt = update(JobTrial).where(*_held(job_id, idx, token)).values(lease_expires_at=until)
    return affected_rows(session, stmt) == 1


def finish(
    session: Session, job_id: str, idx: int, token: str, status: TrialStatus, now: datetime, **values: Any
) -> bool:
    """Move our running trial to done, failed, or back to pending; False if someone else holds it now."""
    stmt = (
        update(JobTrial)
        .where(*_held(job_id, idx, token))
        .values(
            status=status,
            lease_token=None,
            lease_expires_at=None,
            updated_at=now,
            finished_at=now if status in FINISHED else None,
            **values,
        )
    )
    return affected_rows(session, stmt) == 1


def release(session: Session, job_id: str, idx: int, token: str, now: datetime) -> bool:
    """Give an unfinished trial back (canceled, stopped): another worker may claim it at once."""
    stmt = (
        update(JobTrial)
        .where(*_held(job_id, idx, token))
        .values(
            status=TrialStatus.PENDING,
            lease_token=None,
            lease_expires_at=None,
            updated_at=now,
            attempts=JobTrial.attempts - 1,
        )
    )
    return affected_rows(session, stmt) == 1


def fail_exhausted(session: Session, job_id: str, now: datetime, max_attempts: int, message: str) -> int:
    """Fail trials whose worker died on each of their attempts (nobody may claim them any more)."""
    stmt = (
        update(JobTrial)
        .where(JobTrial.job_id == job_id, JobTrial.attempts >= max_attempts, _free(now))
        .values(
            status=TrialStatus.FAILED,
            lease_token=None,
            lease_expires_at=None,
            error_code=ErrorCode.WORKER_LOST,
            error_message=message,
            updated_at=now,
            finished_at=now,
        )
    )
    return affected_rows(session, stmt)
