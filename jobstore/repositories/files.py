"""SQL for file records."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from jobstore.models import FileRecord, JobRecord


def insert_file(session: Session, rec: FileRecord) -> FileRecord:
    session.add(rec)
    session.flush()
    return rec


def get_file(session: Session, file_id: str, owner: str) -> FileRecord | None:
    return session.scalar(select(FileRecord).where(FileRecord.id == file_id, FileRecord.owner == owner))


def get_file_any(session: Session, file_id: str) -> FileRecord | None:
    """By id alone: for workers, which act for the job's owner."""
    return session.scalar(select(FileRecord).where(FileRecord.id == file_id))


def referenced_elsewhere(session: Session, file_id: str, except_job: str) -> bool:
    stmt = select(JobRecord.id).where(
        or_(JobRecord.model_file_id == file_id, JobRecord.data_file_id == file_id), JobRecord.id != except_job
    )
    return session.scalar(stmt.limit(1)) is not None


def delete_file(session: Session, rec: FileRecord) -> None:
    session.delete(rec)
