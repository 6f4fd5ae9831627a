"""SQL for file records."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from jobstore.models import FileRecord, JobRecord
from prunekit.spec.api import JobStatus

# The jobs that still need their inputs: a file they use is neither expired nor deletable.
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


def insert_file(session: Session, rec: FileRecord) -> FileRecord:
    session.add(rec)
    session.flush()
    return rec


def get_file(session: Session, file_id: str, owner: str) -> FileRecord | None:
    return session.scalar(select(FileRecord).where(FileRecord.id == file_id, FileRecord.owner == owner))


def get_file_any(session: Session, file_id: str) -> FileRecord | None:
    """By id alone: for workers, which act for the job's owner."""
    return session.scalar(select(FileRecord).where(FileRecord.id == file_id))


def list_files(session: Session, owner: str, limit: int, before_pk: int | None) -> Sequence[FileRecord]:
    """The owner's files, newest first, below `before_pk` (the cursor)."""
    stmt = select(FileRecord).where(FileRecord.owner == owner)
    if before_pk is not None:
        stmt = stmt.where(FileRecord.pk < before_pk)
    return session.scalars(stmt.order_by(FileRecord.pk.desc()).limit(limit)).all()


def _used_by_an_active_job() -> ColumnElement[bool]:
    """The file row in the query is used by a queued or running job (a correlated EXISTS)."""
    uses = or_(JobRecord.model_file_id == FileRecord.id, JobRecord.data_file_id == FileRecord.id)
    return select(JobRecord.id).where(uses, JobRecord.status.in_(ACTIVE_STATUSES)).exists()


def in_use(session: Session, file_ids: Collection[str]) -> set[str]:
    """Those of `file_ids` that a queued or running job uses."""
    if not file_ids:
        return set()
    ids = list(file_ids)
    stmt = select(JobRecord.model_file_id, JobRecord.data_file_id).where(
        or_(JobRecord.model_file_id.in_(ids), JobRecord.data_file_id.in_(ids)), JobRecord.status.in_(ACTIVE_STATUSES)
    )
    return {f for row in session.execute(stmt).all() for f in row if f in file_ids}


def expired_files(session: Session, created_before: datetime, limit: int, after_pk: int = 0) -> Sequence[FileRecord]:
    """Files uploaded before `created_before` that no queued or running job uses, in upload order from `after_pk`."""
    stmt = (
        select(FileRecord)
        .where(FileRecord.pk > after_pk, FileRecord.created_at < created_before, ~_used_by_an_active_job())
        .order_by(FileRecord.pk)
        .limit(limit)
    )
    return session.scalars(stmt).all()


def stored_file_bytes(session: Session, owner: str) -> int:
    total = session.scalar(select(func.coalesce(func.sum(FileRecord.size), 0)).where(FileRecord.owner == owner))
    return int(total or 0)


def referenced_elsewhere(session: Session, file_id: str, except_job: str) -> bool:
    stmt = select(JobRecord.id).where(
        or_(JobRecord.model_file_id == file_id, JobRecord.data_file_id == file_id), JobRecord.id != except_job
    )
    return session.scalar(stmt.limit(1)) is not None


def delete_file(session: Session, rec: FileRecord) -> None:
    session.delete(rec)
