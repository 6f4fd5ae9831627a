"""CPU threads per job: the default from the cores and job slots, and the number the sandboxed child really runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobstore.settings import Settings
from worker import slots
from worker.engine import threads
from worker.engine.isolation import SandboxLimits, run_isolated

MiB = 1024 * 1024


def torch_threads(payload: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    import torch

    return {"torch": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS")}


def test_the_sandboxed_child_runs_torch_with_the_threads_it_was_given() -> None:
    # The test environment exports OMP_NUM_THREADS=1 (allowlisted into the child): the limit must win over it.
    limits = SandboxLimits(memory_bytes=None, cpu_seconds=120, file_size_bytes=None, wall_seconds=120, threads=3)
    result, _ = run_isolated(f"{__name__}:torch_threads", {}, limits, preload=("torch",))
    assert result == {"torch": 3, "omp": "3"}


@pytest.mark.parametrize(("cores", "slots_", "expected"), [(1, 1, 1), (2, 1, 1), (2, 2, 1), (16, 1, 15), (16, 2, 7)])
def test_default_threads_leave_a_core_and_share_the_rest(
    monkeypatch: pytest.MonkeyPatch, cores: int, slots_: int, expected: int
) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    assert threads.default_threads(slots_) == expected


def test_a_container_cpu_quota_caps_the_cores(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert threads._cgroup_cpus(tmp_path) == 3
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_cpus(tmp_path) is None
    assert threads._cgroup_cpus(tmp_path / "absent") is None
    assert 1 <= threads.available_cores() <= len(os.sched_getaffinity(0))


def test_the_worker_setting_wins_else_the_cores_are_shared_by_its_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: 9)
    monkeypatch.setitem(slots._slots, "jobs", 1)
    assert slots.job_threads(Settings(worker_threads=5)) == 5
    assert slots.job_threads(Settings()) == 8
    slots.remember_concurrency(sender=type("Worker", (), {"concurrency": 4})())
    assert slots.job_threads(Settings()) == 2
    slots.remember_concurrency(sender=type("Worker", (), {"concurrency": "auto"})())  # unresolved: kept as it was
    assert slots.job_threads(Settings()) == 2
