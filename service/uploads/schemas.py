"""Bodies of the uploads API (prunekit/spec/api.py), built from upload_sessions rows."""

from __future__ import annotations

from datetime import timedelta

from jobstore.models import UploadSessionRecord
from prunekit.spec.api import FileKind, Upload, UploadComplete, UploadCreate, UploadState

__all__ = ["Upload", "UploadComplete", "UploadCreate", "UploadState", "upload_view"]


def upload_view(rec: UploadSessionRecord, stale_after: float) -> Upload:
    """The API's body of an upload session; it is discarded `stale_after` seconds after its last chunk."""
    return Upload(
        id=rec.id,
        name=rec.name,
        kind=FileKind(rec.kind),
        size=rec.size,
        offset=rec.received,
        chunk_size=rec.chunk_size,
        state=rec.state,
        sha256=rec.sha256,
        created_at=rec.created_at,
        expires_at=rec.updated_at + timedelta(seconds=stale_after),
        file_id=rec.file_id if rec.state is UploadState.DONE else None,
    )
