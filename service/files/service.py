"""Decisions about uploaded files: record them within the key's quota, list them, delete unused ones."""

from __future__ import annotations

from sqlalchemy.orm import Session

from jobstore import quotas as quota_store
from jobstore.models import FileRecord
from jobstore.repositories import files as repository
from jobstore.settings import Settings
from jobstore.storage import Storage
from service.core import quotas
from service.core.cursors import decode_cursor, encode_cursor
from service.core.errors import Conflict
from service.core.multipart import UploadedPart
from service.files.schemas import FileInfo, FileKind, FileList, file_info


def record_upload(session: Session, owner: str, part: UploadedPart, kind: str, inline: bool = False) -> FileRecord:
    """Add the record of a fully stored upload (the caller has checked the quota and commits)."""
    rec = FileRecord(
        id=part.file_id,
        owner=owner,
        name=part.name,
        kind=kind,
        size=part.size,
        sha256=part.sha256,
        storage_key=part.key,
        inline=inline,
    )
    return repository.insert_file(session, rec)


def save_upload(session: Session, settings: Settings, owner: str, part: UploadedPart, kind: FileKind) -> FileInfo:
    """Record a stored upload if it fits the key's stored-bytes quota (429 otherwise) and commit."""
    quotas.check_upload(session, settings, owner, part.size)
    rec = record_upload(session, owner, part, kind)
    session.commit()
    return file_info(rec, settings.file_ttl_seconds, in_use=False)


def describe(session: Session, settings: Settings, rec: FileRecord) -> FileInfo:
    return file_info(rec, settings.file_ttl_seconds, rec.id in repository.in_use(session, [rec.id]))


def list_files(session: Session, settings: Settings, owner: str, limit: int, cursor: str | None) -> FileList:
    """One page of the owner's files, newest first."""
    before = decode_cursor(cursor) if cursor else None
    rows = repository.list_files(session, owner, limit + 1, before)
    page = rows[:limit]
    used = repository.in_use(session, [r.id for r in page])
    next_cursor = encode_cursor(page[-1].pk) if len(rows) > limit else None
    items = [file_info(r, settings.file_ttl_seconds, r.id in used) for r in page]
    return FileList(items=items, next_cursor=next_cursor)


def delete_file(session: Session, storage: Storage, rec: FileRecord) -> None:
    """Remove a file no queued or running job uses (409 otherwise): its stored object, then its record."""
    quota_store.lock_owner(session, rec.owner)  # no submit can start using it meanwhile
    if repository.in_use(session, [rec.id]):
        raise Conflict(f"file {rec.id} is used by a queued or running job; cancel the job or wait for it to end")
    # Object first, as delete_job does: if storage fails the record stays and the delete can be repeated.
    storage.delete(rec.storage_key)
    repository.delete_file(session, rec)
    session.commit()
