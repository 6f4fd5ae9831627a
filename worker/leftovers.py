"""Removes `prunekit-sandbox-*` temp folders whose worker crashed before it could delete them.

A folder goes only when nothing in it changed for the threshold and the process that made it
(`parent_pid` in its config.json) is gone, or is a newer process that reuses its pid.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from jobstore.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "prunekit-sandbox-"


def sandbox_max_age(settings: Settings) -> float:
    """Seconds a sandbox folder must be untouched before it counts as left over."""
    return settings.sandbox_stale_after or float(settings.visibility_timeout)


def remove_stale_sandboxes(max_age: float, root: Path | None = None, now: float | None = None) -> int:
    """Delete left-over sandbox folders in `root` (the temp dir); returns how many."""
    root = Path(tempfile.gettempdir()) if root is None else root
    cutoff = (time.time() if now is None else now) - max_age
    removed = 0
    for path in root.glob(PREFIX + "*"):
        try:
            if _is_left_over(path, cutoff):
                shutil.rmtree(path)
                removed += 1
        except OSError:  # another worker removed it first, or it is not ours to remove
            log.debug("could not remove %s", path, exc_info=True)
    if removed:
        log.info("removed %d left-over sandbox folders from %s", removed, root)
    return removed


def _is_left_over(path: Path, cutoff: float) -> bool:
    st = path.lstat()
    if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid():
        return False
    with os.scandir(path) as entries:
        newest = max([st.st_mtime, *(e.stat(follow_symlinks=False).st_mtime for e in entries)])
    return newest < cutoff and not _owner_alive(path / "config.json")


def _owner_alive(config: Path) -> bool:
    """Whether the process named in the sandbox's config still runs (a pid reused since does not count)."""
    try:
        with config.open("rb") as fh:
            pid = int(json.loads(fh.read(64 * 1024))["parent_pid"])
        written = config.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no readable config: the folder's age alone decides
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = _process_start(pid)
    return started is None or started <= written + 1.0


def _process_start(pid: int) -> float | None:
    """Wall-clock start time of `pid` from Linux's /proc, or None where that is unknown."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        lines = Path("/proc/stat").read_text().splitlines()
        btime = next(int(line.split()[1]) for line in lines if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")
