"""SQL for resumable upload sessions (upload_sessions)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobstore.db import utcnow
from jobstore.models import UploadSessionRecord
from prunekit.spec.api import UploadState

# Sessions still taking bytes: what they will store counts against the key's quota while they are fresh.
UNFINISHED = (UploadState.OPEN, UploadState.COMPLETING)


def insert_upload(session: Session, rec: UploadSessionRecord) -> UploadSessionRecord:
    session.add(rec)
    session.flush()
    return rec


def get_upload(session: Session, upload_id: str, owner: str, lock: bool = False) -> UploadSessionRecord | None:
    """The owner's session; `lock` holds its row until the transaction ends (chunk and completion updates)."""
    stmt = select(UploadSessionRecord).where(UploadSessionRecord.id == upload_id, UploadSessionRecord.owner == owner)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


def reserved_bytes(session: Session, owner: str, fresh_after: datetime) -> int:
    """Bytes the owner's unfinished sessions touched since `fresh_after` will store once complete."""
    stmt = select(func.coalesce(func.sum(UploadSessionRecord.size), 0)).where(
        UploadSessionRecord.owner == owner,
        UploadSessionRecord.state.in_(UNFINISHED),
        UploadSessionRecord.updated_at >= fresh_after,
    )
    return int(session.scalar(stmt) or 0)


def record_chunk(session: Session, rec: UploadSessionRecord, end: int, part: dict[str, Any]) -> None:
    """Move a locked session's offset to `end`, keeping the storage's record of the part (S3: number and ETag)."""
    if part:
        rec.parts = [p for p in rec.parts if p.get("PartNumber") != part.get("PartNumber")] + [part]
    rec.received = end
    rec.updated_at = utcnow()


def set_state(session: Session, rec: UploadSessionRecord, state: UploadState) -> None:
    rec.state = state
    rec.updated_at = utcnow()


def stale_uploads(
    session: Session, before: datetime, limit: int, owner: str | None = None
) -> Sequence[UploadSessionRecord]:
    """Sessions not touched since `before` (abandoned, or done long ago), oldest first."""
    stmt = select(UploadSessionRecord).where(UploadSessionRecord.updated_at < before)
    if owner is not None:
        stmt = stmt.where(UploadSessionRecord.owner == owner)
    return session.scalars(stmt.order_by(UploadSessionRecord.pk).limit(limit)).all()


def delete_upload(session: Session, rec: UploadSessionRecord) -> None:
    session.delete(rec)
