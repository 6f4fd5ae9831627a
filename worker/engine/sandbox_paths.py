"""Which paths the sandboxed child may open: the libraries it runs on, the job's inputs and its own folders.

Nothing else is granted, in particular not the checkout or working directory the worker runs from (where
settings, storage and other jobs may live), /etc beyond the loader cache, or other processes' /proc entries.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from worker.engine.landlock import DEVICE, READ, WRITE, Confinement

__all__ = ["ARCHITECTURE_ENTRY_POINTS", "job_confinement"]

ARCHITECTURE_ENTRY_POINTS = "prunekit.architectures"
_ENGINE_PACKAGES = ("worker", "prunekit")
_SYSTEM_READ = (
    "/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/localtime",
    "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/sys/devices/system/cpu", "/sys/fs/cgroup",
)  # fmt: skip
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
_CUDA_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri")
_CUDA_READ = ("/proc/driver/nvidia", "/sys/bus/pci", "/sys/devices")


def _package_dir(name: str) -> str | None:
    """Where a top-level package or module lives, without importing it."""
    try:
        spec = importlib.util.find_spec(name.split(".", 1)[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))).resolve())
    return str(Path(spec.origin).resolve()) if spec.origin else None


def _architecture_modules() -> list[str]:
    """Modules of user architectures registered through entry points (they may live outside site-packages)."""
    return [ep.module for ep in importlib.metadata.entry_points(group=ARCHITECTURE_ENTRY_POINTS)]


def _code_paths(modules: Iterable[str]) -> list[str]:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    packages = [_package_dir(m) for m in (*_ENGINE_PACKAGES, *modules, *_architecture_modules())]
    return sorted(prefixes | {p for p in packages if p})


def job_confinement(
    readable: Iterable[str | os.PathLike[str]],
    writable: Iterable[str | os.PathLike[str]],
    modules: Iterable[str],
    uses_cuda: bool,
    deny_tcp: bool = True,
) -> Confinement:
    """Rules for one job: code and system libraries and `readable` read-only, `writable` read-write."""
    rules = [(p, READ) for p in (*_SYSTEM_READ, *_code_paths(modules))]
    rules += [(str(Path(p).resolve()), READ) for p in readable]
    rules += [(str(Path(p).resolve()), WRITE) for p in writable]
    rules += [(p, DEVICE) for p in _DEVICES]
    if uses_cuda:
        rules += [(p, DEVICE | WRITE) for pattern in _CUDA_DEVICES for p in glob.glob(pattern)]
        rules += [(p, READ) for p in _CUDA_READ]
    return Confinement(rules=tuple(rules), deny_tcp=deny_tcp)
