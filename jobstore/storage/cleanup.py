"""Removes partial uploads (`.tmp/*.part` of local storage) that a crashed process left behind, abandoned resumable
uploads, and expired files."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from pathlib import Path

from jobstore import quotas
from jobstore.db import Database, utcnow
from jobstore.repositories import files as files_repo
from jobstore.repositories import uploads as uploads_repo
from jobstore.settings import Settings
from jobstore.storage.base import Storage
from prunekit.spec.api import UploadState

log = logging.getLogger(__name__)


def remove_stale_parts(storage_dir: Path, max_age: float, now: float | None = None) -> int:
    """Delete `.part` files under `storage_dir/.tmp` not written to for `max_age` seconds; returns how many."""
    cutoff = (time.time() if now is None else now) - max_age
    removed = 0
    for part in (storage_dir / ".tmp").glob("*.part"):
        try:
            if part.is_file() and not part.is_symlink() and part.lstat().st_mtime < cutoff:
                part.unlink()
                removed += 1
        except FileNotFoundError:  # committed or aborted meanwhile
            pass
        except OSError:  # a disk problem must not stop the start-up
            log.warning("could not remove %s", part, exc_info=True)
    if removed:
        log.info("removed %d stale partial uploads from %s", removed, storage_dir / ".tmp")
    return removed


def clean_upload_parts(settings: Settings) -> int:
    """Remove stale partial uploads of local storage (S3 keeps none on the disk)."""
    if settings.storage_backend != "local":
        return 0
    return remove_stale_parts(settings.storage_dir.resolve(), settings.upload_part_stale_after)


EXPIRE_BATCH = 100  # files looked at per query; a pass goes on until none is left


def remove_stale_uploads(
    db: Database, storage: Storage, max_age: float, now: datetime | None = None, owner: str | None = None
) -> int:
    """Discard resumable uploads (of `owner`, or all) untouched for `max_age` seconds: staged parts, then rows."""
    cutoff = (now or utcnow()) - timedelta(seconds=max_age)
    removed = 0
    while True:
        with db.session() as s:
            batch = uploads_repo.stale_uploads(s, cutoff, EXPIRE_BATCH, owner)
            for rec in batch:
                if rec.state is not UploadState.DONE:  # a done one's object is a file now, its record the owner's
                    storage.abort_staged(rec.id, rec.storage_key, rec.staging_ref)
                if rec.state is UploadState.COMPLETING:  # it may have been published; no file record names it
                    storage.delete(rec.storage_key)
                uploads_repo.delete_upload(s, rec)
                removed += 1
        if len(batch) < EXPIRE_BATCH:
            break
    if removed:
        log.info("removed %d abandoned or finished upload sessions", removed)
    return removed


def remove_expired_files(db: Database, storage: Storage, ttl_seconds: float, now: datetime | None = None) -> int:
    """Delete files uploaded over `ttl_seconds` ago that no queued or running job uses; returns how many."""
    cutoff = (now or utcnow()) - timedelta(seconds=ttl_seconds)
    removed, after_pk = 0, 0
    while True:
        with db.session() as s:
            batch = [(r.id, r.owner, r.pk) for r in files_repo.expired_files(s, cutoff, EXPIRE_BATCH, after_pk)]
        for file_id, owner, pk in batch:
            after_pk = pk
            removed += _remove_if_expired(db, storage, file_id, owner, cutoff)
        if len(batch) < EXPIRE_BATCH:
            break
    if removed:
        log.info("removed %d expired files", removed)
    return removed


def _remove_if_expired(db: Database, storage: Storage, file_id: str, owner: str, cutoff: datetime) -> int:
    # Checked again under the key's lock: a submit may have started using the file since it was listed.
    with db.session() as s:
        quotas.lock_owner(s, owner)
        rec = files_repo.get_file(s, file_id, owner)
        if rec is None or rec.created_at >= cutoff or files_repo.in_use(s, [file_id]):
            return 0
        storage.delete(rec.storage_key)  # object first: a failure leaves the record, and the next pass retries
        files_repo.delete_file(s, rec)
    return 1
