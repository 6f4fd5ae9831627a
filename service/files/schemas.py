"""Bodies of the files API: FileInfo and FileList of prunekit/spec/api.py, built from stored rows."""

from __future__ import annotations

from datetime import timedelta

from jobstore.models import FileRecord
from prunekit.spec.api import FileInfo, FileKind, FileList

__all__ = ["FileInfo", "FileKind", "FileList", "file_info"]


def file_info(rec: FileRecord, ttl_seconds: float, in_use: bool) -> FileInfo:
    """The API's body of a stored file; it expires `ttl_seconds` after its upload unless an active job uses it."""
    return FileInfo(
        id=rec.id,
        sha256=rec.sha256,
        size=rec.size,
        name=rec.name,
        kind=FileKind(rec.kind),
        created_at=rec.created_at,
        expires_at=rec.created_at + timedelta(seconds=ttl_seconds),
        in_use=in_use,
    )
