"""How many CPU threads a job's torch may use (no torch here: the parent and the CLI decide before it loads)."""

from __future__ import annotations

import math
import os
from pathlib import Path

# The variables the math libraries read when they start; torch's intra-op pool follows OMP_NUM_THREADS.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    # A container's CPU quota (docker --cpus) is not visible in the affinity mask.
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def available_cores() -> int:
    """Physical cores this process may run on: its CPU affinity with hyperthreads counted once, within its quota."""
    cpus = sorted(os.sched_getaffinity(0))
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    quota = _cgroup_cpus()
    return max(1, min(len(cores), quota) if quota else len(cores))


def default_threads(slots: int = 1) -> int:
    """Threads per job: the available cores less one (the worker or CLI process itself), shared by `slots` jobs.

    OpenMP threads spin while they wait, so a pool that oversubscribes the cores is several times slower than
    one thread (measured: 7-10x on 2 cores); leaving a core to the parent keeps small machines at one thread.
    """
    return max(1, (available_cores() - 1) // max(1, slots))


def thread_environment(threads: int) -> dict[str, str]:
    """The environment variables that make the math libraries of a new process use `threads` threads."""
    return dict.fromkeys(THREAD_VARIABLES, str(threads))
