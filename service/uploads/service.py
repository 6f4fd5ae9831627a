"""Decisions about resumable uploads: open one within the key's quota, accept chunks in order, publish it as a file.

Chunks are staged by the storage (a .part file of local storage, the parts of an S3 multipart upload); the
session's row says how many bytes are acknowledged, so any API replica can take the next chunk.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from jobstore.db import Database, utcnow
from jobstore.ids import new_id
from jobstore.models import UploadSessionRecord
from jobstore.repositories import files as files_repo
from jobstore.repositories import uploads as repository
from jobstore.settings import Settings
from jobstore.storage import ObjectMissing, Storage
from service.core import quotas
from service.core.errors import (
    ChecksumMismatch,
    Conflict,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RangeNotSatisfiable,
    UploadOffsetMismatch,
    ValidationProblem,
)
from service.core.multipart import UploadedPart, safe_display_name
from service.files.schemas import FileInfo, FileKind, file_info
from service.files.service import record_upload
from service.uploads.schemas import Upload, UploadCreate, UploadState, upload_view

S3_MIN_PART = 5 * 1024 * 1024  # S3 refuses smaller parts, except the last
S3_MAX_PARTS = 10_000
_CONTENT_RANGE = re.compile(r"^bytes (\d{1,19})-(\d{1,19})/(\d{1,19})$")


@dataclass(frozen=True)
class ChunkPlan:
    """What a PUT does: write bytes start..end (inclusive) as part `number`, or answer that it has them already."""

    start: int
    end: int
    number: int
    duplicate: bool

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def chunk_size_for(settings: Settings, size: int) -> int:
    """The chunk size of a new upload; on S3 a chunk is a multipart part (5 MiB at least, 10,000 at most)."""
    chunk = settings.upload_chunk_bytes
    if settings.storage_backend == "s3":
        chunk = max(chunk, S3_MIN_PART, -(-size // S3_MAX_PARTS))
    return min(chunk, size)


def create_upload(
    db: Database, storage: Storage, settings: Settings, owner: str, body: UploadCreate
) -> UploadSessionRecord:
    """Open a session if the file fits the size cap (413) and, with the key's open sessions, its quota (429)."""
    if body.size > settings.max_upload_bytes:
        raise PayloadTooLarge(f"the file has {body.size} bytes; the upload limit is {settings.max_upload_bytes}")
    file_id, upload_id = new_id("fil"), new_id("upl")
    key = f"files/{file_id}"
    with db.session() as session:
        fresh_after = utcnow() - timedelta(seconds=settings.upload_part_stale_after)
        quotas.check_upload(
            session, settings, owner, body.size + repository.reserved_bytes(session, owner, fresh_after)
        )
        ref = storage.begin_staged(upload_id, key)
        rec = UploadSessionRecord(
            id=upload_id,
            owner=owner,
            name=safe_display_name(body.name),
            kind=body.kind.value,
            size=body.size,
            sha256=body.sha256,
            chunk_size=chunk_size_for(settings, body.size),
            received=0,
            state=UploadState.OPEN,
            file_id=file_id,
            storage_key=key,
            staging_ref=ref,
            parts=[],
        )
        try:
            repository.insert_upload(session, rec)
            session.commit()
        except BaseException:
            storage.abort_staged(upload_id, key, ref)
            raise
        session.expunge(rec)
    return rec


def check_usable(rec: UploadSessionRecord, settings: Settings) -> None:
    """404 for a session left untouched past `upload_part_stale_after`: its staged bytes may be gone."""
    stale = rec.updated_at < utcnow() - timedelta(seconds=settings.upload_part_stale_after)
    if stale and rec.state is not UploadState.DONE:
        raise NotFound(f"upload {rec.id} expired after receiving nothing for a while; start a new upload")


def plan_chunk(rec: UploadSessionRecord, settings: Settings, content_range: str | None) -> ChunkPlan:
    """Check a chunk's `Content-Range: bytes a-b/size` against the session: 416 malformed, 409 not at the offset."""
    check_usable(rec, settings)
    if rec.state is not UploadState.OPEN:
        raise Conflict(f"upload {rec.id} is {rec.state}: it takes no more chunks")
    m = _CONTENT_RANGE.match(content_range or "")
    not_satisfiable = {"Content-Range": f"bytes */{rec.size}"}
    if m is None:
        raise RangeNotSatisfiable(
            "a chunk needs a 'Content-Range: bytes <first>-<last>/<size>' header", headers=not_satisfiable
        )
    start, end, total = (int(g) for g in m.groups())
    if total != rec.size or end < start or end >= rec.size:
        raise RangeNotSatisfiable(
            f"range {content_range} is not within this {rec.size}-byte upload", headers=not_satisfiable
        )
    number = start // rec.chunk_size + 1
    if end < rec.received:  # a repeated chunk whose answer was lost
        return ChunkPlan(start, end, number, duplicate=True)
    if start != rec.received:
        raise UploadOffsetMismatch(f"the upload has {rec.received} bytes; the next chunk starts there", rec.received)
    if end - start + 1 != min(rec.chunk_size, rec.size - start):
        raise RangeNotSatisfiable(
            f"chunks of this upload have {rec.chunk_size} bytes (the last one: what is left)", headers=not_satisfiable
        )
    return ChunkPlan(start, end, number, duplicate=False)


def record_chunk(
    db: Database, settings: Settings, owner: str, upload_id: str, plan: ChunkPlan, part: dict[str, Any]
) -> Upload:
    """Acknowledge a stored chunk: the offset moves past it (unless a concurrent try of it did so first)."""
    with db.session() as session:
        rec = _locked(session, upload_id, owner)
        if rec.state is not UploadState.OPEN:
            raise Conflict(f"upload {rec.id} is {rec.state}: it takes no more chunks")
        if rec.received == plan.start:
            repository.record_chunk(session, rec, plan.end + 1, part)
        elif rec.received < plan.start:
            raise UploadOffsetMismatch(
                f"the upload has {rec.received} bytes; the next chunk starts there", rec.received
            )
        return upload_view(rec, settings.upload_part_stale_after)


def describe(db: Database, settings: Settings, owner: str, upload_id: str) -> Upload:
    with db.session() as session:
        rec = repository.get_upload(session, upload_id, owner)
        if rec is None:
            raise NotFound(f"no upload {upload_id}")
        check_usable(rec, settings)
        return upload_view(rec, settings.upload_part_stale_after)


def complete_upload(
    db: Database, storage: Storage, settings: Settings, owner: str, upload_id: str, sha256: str | None
) -> FileInfo:
    """Publish a fully received upload as a file once its size and sha256 check out; repeating it is harmless."""
    with db.session() as session:
        rec = _locked(session, upload_id, owner)
        if rec.state is UploadState.DONE:
            return _published(session, settings, rec)
        expected = _start_completion(session, settings, rec, sha256)
        session.flush()
        session.expunge(rec)  # detached, so the slow part below holds no connection
    try:
        storage.finish_staged(rec.id, rec.storage_key, rec.staging_ref, rec.parts, rec.size)
        digest = _sha256_of(storage, rec.storage_key)
        if expected is not None and digest != expected:
            raise ChecksumMismatch(
                f"the {rec.size} received bytes have sha256 {digest}, not {expected}; the upload is discarded, "
                "send the file again"
            )
        return _publish(db, settings, rec, digest)
    except ObjectMissing:
        _discard(db, storage, rec)
        raise NotFound(f"upload {rec.id} expired before it was completed; start a new upload") from None
    except BaseException:
        _discard(db, storage, rec)
        raise


def abort_upload(db: Database, storage: Storage, owner: str, upload_id: str) -> None:
    """Discard an unfinished upload and its staged bytes (409 once it is being completed or done)."""
    with db.session() as session:
        rec = _locked(session, upload_id, owner)
        if rec.state is not UploadState.OPEN:
            raise Conflict(f"upload {rec.id} is {rec.state}; delete its file instead")
        storage.abort_staged(rec.id, rec.storage_key, rec.staging_ref)
        repository.delete_upload(session, rec)


def _locked(session: Session, upload_id: str, owner: str) -> UploadSessionRecord:
    rec = repository.get_upload(session, upload_id, owner, lock=True)
    if rec is None:
        raise NotFound(f"no upload {upload_id}")
    return rec


def _start_completion(session: Session, settings: Settings, rec: UploadSessionRecord, sha256: str | None) -> str | None:
    """Mark a complete, open session as completing (in the caller's transaction); returns the sha256 to check."""
    if rec.state is UploadState.COMPLETING:
        raise NotReady(f"upload {rec.id} is being verified and published; ask again shortly")
    check_usable(rec, settings)
    if rec.received < rec.size:
        raise Conflict(
            f"upload {rec.id} has {rec.received} of {rec.size} bytes; send the rest before completing it",
            headers={"Upload-Offset": str(rec.received)},
        )
    if sha256 and rec.sha256 and sha256 != rec.sha256:
        raise ValidationProblem(
            "the sha256 given now differs from the one given when the upload was created",
            [{"loc": "sha256", "msg": "differs from the upload's"}],
        )
    quotas.check_upload(session, settings, rec.owner, rec.size)  # 429 before anything is published
    repository.set_state(session, rec, UploadState.COMPLETING)
    return sha256 or rec.sha256


def _publish(db: Database, settings: Settings, rec: UploadSessionRecord, digest: str) -> FileInfo:
    """Record the published object as the owner's file, within the quota, and mark the session done."""
    with db.session() as session:
        quotas.check_upload(session, settings, rec.owner, rec.size)
        live = _locked(session, rec.id, rec.owner)
        part = UploadedPart("file", rec.name, rec.file_id, rec.storage_key, rec.size, digest)
        file_rec = record_upload(session, rec.owner, part, FileKind(rec.kind))
        repository.set_state(session, live, UploadState.DONE)
        return file_info(file_rec, settings.file_ttl_seconds, in_use=False)


def _published(session: Session, settings: Settings, rec: UploadSessionRecord) -> FileInfo:
    file_rec = files_repo.get_file(session, rec.file_id, rec.owner)
    if file_rec is None:
        raise NotFound(f"upload {rec.id} became file {rec.file_id}, which has since been deleted")
    return file_info(file_rec, settings.file_ttl_seconds, rec.file_id in files_repo.in_use(session, [rec.file_id]))


def _sha256_of(storage: Storage, key: str) -> str:
    """The stored object's sha256, streamed (chunks arrive over many requests, so no running hash survives)."""
    digest = hashlib.sha256()
    for chunk in storage.iter_range(key):
        digest.update(chunk)
    return digest.hexdigest()


def _discard(db: Database, storage: Storage, rec: UploadSessionRecord) -> None:
    """Remove a failed completion's object, staged bytes and session, so the owner's quota is freed."""
    storage.delete(rec.storage_key)
    storage.abort_staged(rec.id, rec.storage_key, rec.staging_ref)
    with db.session() as session:
        live = repository.get_upload(session, rec.id, rec.owner, lock=True)
        if live is not None and live.state is not UploadState.DONE:
            repository.delete_upload(session, live)
