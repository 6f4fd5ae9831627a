"""The sandboxed child process: `python -m worker.engine.child CONFIG.json` (started by isolation.run_isolated).

Order matters: leave the network, cap CPU time and file size, import the (trusted) target, then cap the address
space on top of what the interpreter and its imports already mapped, and only then touch the untrusted payload.
Keep the imports here light (no torch): the address-space baseline is measured after the target's imports.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import json
import os
import re
import resource
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.engine.errors import EngineError, ResourceLimitError
from worker.engine.landlock import READ, Confinement, restrict

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_MEMORY_HINTS = ("can't allocate memory", "cannot allocate memory", "not enough memory", "out of memory", "bad_alloc")


def human_bytes(n: int) -> str:
    """4294967296 -> '4 GiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            text = f"{value:.1f}".removesuffix(".0")
            return f"{text} {unit}"
        value /= 1024
    return f"{n} B"


def memory_limit_error(limit: int | None) -> ResourceLimitError:
    """The error for a job that ran out of its memory allowance."""
    what = f"the {human_bytes(limit)} memory limit" if limit else "the available memory"
    return ResourceLimitError(
        f"the job exceeded {what}; use a smaller model or batch size, fewer samples, or ask for a larger limit"
    )


def file_size_error(limit: int | None) -> ResourceLimitError:
    """The error for a job that tried to write a file above its size limit."""
    what = f"the {human_bytes(limit)} file-size limit" if limit else "the file-size limit"
    return ResourceLimitError(f"the job tried to write a file larger than {what}; the output would be too large")


def _unshare_network() -> str:
    # Python 3.11 has no os.unshare; call libc. A fresh network namespace has only a loopback that is down, so
    # every connect() fails with ENETUNREACH, including to 127.0.0.1 (other services on this host).
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        unshare = libc.unshare
    except (OSError, AttributeError) as exc:
        return f"not isolated: unshare() is not available ({exc})"
    if unshare(_CLONE_NEWNET) == 0:
        return "isolated"
    first = ctypes.get_errno()
    # Without CAP_SYS_ADMIN, an unprivileged user namespace grants it for a new network namespace.
    if unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
        return "isolated"
    second = ctypes.get_errno()
    return (
        f"not isolated: unshare(CLONE_NEWNET) failed ({os.strerror(first)}) and so did an unprivileged user "
        f"namespace ({os.strerror(second)}); needs CAP_SYS_ADMIN or kernel.unprivileged_userns_clone=1"
    )


def _set_limit(which: int, value: int | None, hard_extra: int = 0) -> int | None:
    if value is None:
        return None
    resource.setrlimit(which, (value, value + hard_extra))
    return value


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _resolve(target: str) -> Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], Any]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise EngineError(f"bad sandbox target '{target}': expected 'package.module:function'")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise EngineError(f"sandbox target '{target}' is not callable")
    return fn


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, default=str)
    os.replace(tmp, path)


def _classify(exc: BaseException, limits: dict[str, Any]) -> dict[str, Any]:
    if isinstance(exc, EngineError):
        return exc.to_dict()
    if isinstance(exc, MemoryError):
        return memory_limit_error(limits.get("memory_bytes")).to_dict()
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:  # Python ignores SIGXFSZ: writes fail with EFBIG
        return file_size_error(limits.get("file_size_bytes")).to_dict()
    if isinstance(exc, RuntimeError) and any(h in str(exc).lower() for h in _MEMORY_HINTS):
        return memory_limit_error(limits.get("memory_bytes")).to_dict()  # torch's allocator under RLIMIT_AS
    # Only prunekit's words reach the user: an arbitrary exception's text may carry file contents or paths.
    name = re.sub(r"[^\w.]", "", type(exc).__name__)[:60]
    return {"code": EngineError.code, "message": f"internal error in the sandboxed job ({name}); see the worker's log"}


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int | None) -> None:
    # The child runs in its own session, so a worker killed with -9 (or by Celery's hard time limit) would leave
    # it running as an orphan that can no longer publish anything: have the kernel kill it with its parent.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect


def _set_torch_threads(threads: int | None) -> None:
    # The parent's OMP_NUM_THREADS sizes torch's pool as it loads; set it explicitly too, since only libraries
    # that read the variable at load time see it. torch is touched only when a preload already imported it.
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None:
        torch.set_num_threads(threads)


def _confine(config: dict[str, Any] | None) -> str:
    # Last step before the untrusted payload: everything the job imported so far stays usable, nothing new opens.
    if config is None:
        return "not isolated: disabled by configuration"
    own = [(str(Path("/proc/self").resolve()), READ)]  # the job's own /proc entries, not other processes'
    rules = (*((str(p), int(r)) for p, r in config["rules"]), *own)
    return restrict(Confinement(rules=rules, deny_tcp=bool(config["deny_tcp"])))


def main(config_path: str) -> int:
    """Run the configured target under its limits; the outcome goes to the result file, events to the pipe."""
    config = json.loads(Path(config_path).read_text())
    limits: dict[str, Any] = config["limits"]
    event_fd: int = config["event_fd"]
    os.set_inheritable(event_fd, False)  # programs the job execs must not be able to write our events
    events = os.fdopen(event_fd, "w", buffering=1, encoding="utf-8")
    lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        line = json.dumps(event, default=str)
        with lock:
            events.write(line + "\n")

    _die_with_parent(config.get("parent_pid"))
    network = _unshare_network() if limits.get("isolate_network", True) else "not isolated: disabled by configuration"
    rlimits: dict[str, int | None] = {
        # soft limit first (SIGXCPU, which the parent reports); the hard limit SIGKILLs a job that ignores it
        "RLIMIT_CPU": _set_limit(resource.RLIMIT_CPU, limits.get("cpu_seconds"), hard_extra=5),
        "RLIMIT_FSIZE": _set_limit(resource.RLIMIT_FSIZE, limits.get("file_size_bytes")),
        "RLIMIT_AS": None,
        "memory_bytes": limits.get("memory_bytes"),
        # no core dumps: SIGXCPU and crashes would otherwise write the job's whole memory to disk
        "RLIMIT_CORE": _set_limit(resource.RLIMIT_CORE, 0),
    }
    sys.path[:0] = [p for p in config.get("sys_path", []) if p not in sys.path]
    try:
        for name in config.get("preload", []):
            importlib.import_module(name)
        _set_torch_threads(limits.get("threads"))
        fn = _resolve(config["target"])
        memory = limits.get("memory_bytes")
        if memory is not None and not limits.get("uses_cuda"):
            # RLIMIT_AS counts mapped, not resident, memory: torch alone maps ~3 GiB of libraries. So the allowance
            # is on top of the baseline after imports. Not with CUDA: its driver reserves huge virtual ranges.
            baseline = _vm_size()
            rlimits["address_space_baseline"] = baseline
            rlimits["RLIMIT_AS"] = _set_limit(resource.RLIMIT_AS, baseline + memory)
        filesystem = _confine(config.get("confinement"))
        _write_json(
            config["sandbox_path"],
            {"network": network, "filesystem": filesystem, "rlimits": rlimits, "pid": os.getpid()},
        )
        payload = json.loads(Path(config["payload_path"]).read_text())
        result = fn(payload, emit)
        if result is None:
            result = {}
        if not isinstance(result, dict):
            raise EngineError(f"sandbox target returned {type(result).__name__}, expected a dict")
        outcome: dict[str, Any] = {"ok": True, "result": result}
    except BaseException as exc:
        if not isinstance(exc, EngineError):
            traceback.print_exc(file=sys.stderr)
        outcome = {"ok": False, "error": _classify(exc, limits)}
    with contextlib.suppress(OSError):  # the parent stopped listening (canceled); the result file still tells
        events.flush()
    _write_json(config["result_path"], outcome)
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
