"""Left-over sandbox folders of crashed workers are removed; live or recent ones never are."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from jobstore.settings import Settings
from worker.context import WorkerContext
from worker.leftovers import remove_stale_sandboxes, sandbox_max_age
from worker.sweeper import clean_leftovers

HOUR = 3600.0
NO_SUCH_PID = 2**22 + 12345  # above Linux's largest pid_max: no process has it


def _sandbox(root: Path, name: str, age: float, parent_pid: int | None) -> Path:
    """A sandbox folder like worker/engine/isolation.py makes, all of it last changed `age` seconds ago."""
    folder = root / f"prunekit-sandbox-{name}"
    folder.mkdir()
    if parent_pid is not None:
        (folder / "config.json").write_text(json.dumps({"parent_pid": parent_pid}))
    (folder / "child.log").write_bytes(b"log")
    t = time.time() - age
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (t, t), follow_symlinks=False)
    return folder


def test_old_folders_of_gone_processes_are_removed(tmp_path: Path) -> None:
    dead = _sandbox(tmp_path, "dead", 2 * HOUR, NO_SUCH_PID)
    no_config = _sandbox(tmp_path, "noconfig", 2 * HOUR, None)
    assert remove_stale_sandboxes(HOUR, tmp_path) == 2
    assert not dead.exists() and not no_config.exists()


def test_recent_folders_are_kept_whoever_made_them(tmp_path: Path) -> None:
    young = _sandbox(tmp_path, "young", 60, NO_SUCH_PID)
    active = _sandbox(tmp_path, "active", 2 * HOUR, NO_SUCH_PID)
    (active / "child.log").write_bytes(b"still logging")  # the folder is old, its child writes now
    assert remove_stale_sandboxes(HOUR, tmp_path) == 0
    assert young.is_dir() and active.is_dir()


def test_a_folder_whose_process_still_runs_is_kept(tmp_path: Path) -> None:
    live = _sandbox(tmp_path, "live", 0, os.getpid())
    assert remove_stale_sandboxes(HOUR, tmp_path, now=time.time() + 2 * HOUR) == 0  # old, but its owner lives
    assert live.is_dir()


def test_a_pid_reused_by_a_newer_process_does_not_keep_a_folder(tmp_path: Path) -> None:
    # Written a day ago by "our" pid: this process started later, so another process made the folder.
    reused = _sandbox(tmp_path, "reused", 24 * HOUR, os.getpid())
    assert remove_stale_sandboxes(HOUR, tmp_path) == 1
    assert not reused.exists()


def test_other_names_and_symlinks_are_never_touched(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = _sandbox(elsewhere, "target", 2 * HOUR, NO_SUCH_PID)  # removable, were the link followed
    (tmp_path / "prunekit-sandbox-link").symlink_to(target)
    os.utime(tmp_path / "prunekit-sandbox-link", (0, 0), follow_symlinks=False)
    other = tmp_path / "someone-else"
    other.mkdir()
    os.utime(other, (0, 0))
    assert remove_stale_sandboxes(HOUR, tmp_path, now=time.time() + 2 * HOUR) == 0
    assert target.is_dir() and (target / "child.log").is_file() and other.is_dir()


def test_the_default_threshold_outlasts_the_longest_job() -> None:
    settings = Settings()
    assert sandbox_max_age(settings) > settings.job_time_limit
    assert sandbox_max_age(Settings(sandbox_stale_after=120)) == 120


def test_the_sweeper_cleans_the_temp_dir_and_partial_uploads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = _sandbox(tmp_path, "dead", 2 * HOUR, NO_SUCH_PID)
    settings = Settings(storage_dir=tmp_path / "storage", sandbox_stale_after=HOUR, upload_part_stale_after=HOUR)
    part = tmp_path / "storage" / ".tmp" / "upload.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half an upload")
    os.utime(part, (time.time() - 2 * HOUR,) * 2)
    ctx = WorkerContext(settings, None, None, None)  # type: ignore[arg-type]  # cleanup needs only settings
    assert clean_leftovers(ctx) == {"sandboxes": 1, "parts": 1}
    assert not dead.exists() and not part.exists()
