"""Partial uploads (.tmp/*.part) that a crashed API left behind are removed; recent ones are kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from jobstore.settings import Settings
from jobstore.storage.cleanup import clean_upload_parts, remove_stale_parts

HOUR = 3600.0


def _part(storage_dir: Path, name: str, age: float) -> Path:
    path = storage_dir / ".tmp" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half an upload")
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def test_only_old_part_files_are_removed(tmp_path: Path) -> None:
    old = _part(tmp_path, "old.part", 2 * HOUR)
    recent = _part(tmp_path, "recent.part", 60)  # an upload still being written
    other = _part(tmp_path, "probe-x", 2 * HOUR)
    assert remove_stale_parts(tmp_path, HOUR) == 1
    assert not old.exists() and recent.is_file() and other.is_file()
    assert remove_stale_parts(tmp_path / "missing", HOUR) == 0


def test_the_api_removes_stale_parts_when_it_starts(app: FastAPI, settings: Settings) -> None:
    storage_dir = settings.storage_dir.resolve()
    old = _part(storage_dir, "crashed.part", 2 * HOUR)
    recent = _part(storage_dir, "recent.part", 60)
    with TestClient(app) as c:
        assert c.get("/livez").status_code == 200
    assert not old.exists() and recent.is_file()


def test_s3_storage_has_nothing_to_clean(tmp_path: Path) -> None:
    settings = Settings(storage_backend="s3", s3_bucket="b", storage_dir=tmp_path)
    _part(tmp_path, "old.part", 2 * HOUR)
    assert clean_upload_parts(settings) == 0
