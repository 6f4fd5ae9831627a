"""Decisions about uploaded files: record them once they are fully stored."""

from __future__ import annotations

from sqlalchemy.orm import Session

from jobstore.models import FileRecord
from jobstore.repositories import files as repository
from service.core.multipart import UploadedPart


def record_upload(session: Session, owner: str, part: UploadedPart, kind: str, inline: bool = False) -> FileRecord:
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
