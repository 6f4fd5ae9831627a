"""Removes partial uploads (`.tmp/*.part` of local storage) that a crashed process left behind."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from jobstore.settings import Settings

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
