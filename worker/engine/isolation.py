"""Run an engine function in a resource-limited child process (`python -m worker.engine.child`).

The parent sends the payload as a JSON file, reads events as JSON lines from a dedicated pipe (stdout is left to
libraries that print), and reads the outcome from a JSON result file. The child gets a scrubbed environment, its
own session (so the whole process group can be killed), no network and rlimits on CPU time, file size and memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prunekit.spec.report import Isolation
from worker.engine.child import file_size_error, human_bytes, memory_limit_error
from worker.engine.errors import EngineError, ResourceLimitError, error_from_dict
from worker.engine.landlock import Confinement
from worker.engine.sandbox_paths import job_confinement
from worker.engine.threads import thread_environment

__all__ = ["DEFAULT_ENV_ALLOW", "SandboxLimits", "child_environment", "run_isolated"]

log = logging.getLogger(__name__)

DEFAULT_ENV_ALLOW: tuple[str, ...] = (
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHASHSEED", "VIRTUAL_ENV",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF",
    "CUBLAS_WORKSPACE_CONFIG",
)  # fmt: skip
# Names that never reach the child, even when allowlisted: credentials and the service's own settings.
_SECRET_RE = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|^PRUNEKIT_|^AWS_", re.IGNORECASE)
# Set for the child: few malloc arenas (each reserves 64 MiB of address space, which RLIMIT_AS counts), no .pyc
# writes into the source tree, unbuffered output so the last lines before a crash reach the log.
_CHILD_ENV = {"MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
_STDERR_TAIL_LINES = 15
_MEMORY_HINTS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "can't allocate memory", "out of memory")


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int | None  # address space the job may map on top of the interpreter and its imports
    cpu_seconds: int | None  # CPU time, all threads together (SIGXCPU, then SIGKILL 5 s later)
    file_size_bytes: int | None  # largest file the job may write
    isolate_network: bool = True
    isolate_filesystem: bool = True  # Landlock: the child opens only libraries, `readable` and `writable` paths
    env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW
    uses_cuda: bool = False  # the memory limit is not applied with CUDA (its driver reserves huge virtual ranges)
    wall_seconds: float | None = None  # wall-clock limit, enforced by the parent
    threads: int | None = None  # CPU threads of torch and the math libraries; None leaves their own default


def child_environment(allow: tuple[str, ...], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: allowlisted names only, never secret-looking ones, plus our own settings."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k in allow and not _SECRET_RE.search(k)}
    # The child must import this package even when it is not installed (a source checkout).
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.update(_CHILD_ENV)
    return env


def _describe_environment(env: Mapping[str, str], allow: tuple[str, ...]) -> str:
    dropped = sum(1 for k in os.environ if k not in env and (k not in allow or _SECRET_RE.search(k)))
    return (
        f"scrubbed to an allowlist: {', '.join(sorted(env))}; {dropped} other variables dropped "
        "(names like *KEY*, *SECRET*, *TOKEN*, *PASSWORD*, PRUNEKIT_*, AWS_* are never passed)"
    )


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _reap(pid: int, block: bool) -> tuple[int, float] | None:
    """(exit code as Popen reports it, CPU seconds used) once the child has exited, else None."""
    try:
        reaped, status, usage = os.wait4(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        # Someone else reaped it (a SIGCHLD handler in the host process): the result file decides the outcome.
        return (0, 0.0)
    if reaped == 0:
        return None
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def _kill_group(pid: int, sig: int) -> None:
    # the child leads its own session: this reaches its subprocesses too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _terminate(proc: subprocess.Popen[bytes], grace_seconds: float) -> tuple[int, float]:
    _kill_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        done = _reap(proc.pid, block=False)
        if done is not None:
            proc.returncode = done[0]
            _kill_group(proc.pid, signal.SIGKILL)
            return done
        time.sleep(0.05)
    _kill_group(proc.pid, signal.SIGKILL)
    done = _reap(proc.pid, block=True)
    assert done is not None
    proc.returncode = done[0]
    return done


def _tail(log_path: Path, lines: int = _STDERR_TAIL_LINES) -> str:
    try:
        with open(log_path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class _EventPump:
    """Reads JSON lines from the event pipe and hands each to on_event (which may raise to cancel)."""

    def __init__(self, fd: int, on_event: Callable[[dict[str, Any]], None] | None) -> None:
        self.fd = fd
        self.on_event = on_event
        self.buffer = b""
        os.set_blocking(fd, False)

    def read_available(self) -> bool:
        """Read what is there; False at end of file."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                self._dispatch_lines(final=True)
                return False
            self.buffer += chunk
            self._dispatch_lines()

    def _dispatch_lines(self, final: bool = False) -> None:
        *lines, self.buffer = self.buffer.split(b"\n")
        if final and self.buffer:
            lines.append(self.buffer)
            self.buffer = b""
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                log.warning("ignoring a malformed event line from the sandbox: %r", line[:200])
                continue
            if self.on_event is not None and isinstance(event, dict):
                self.on_event(event)


def redact_paths(message: str, paths: tuple[str | os.PathLike[str], ...]) -> str:
    """`message` with each of the server's `paths` shown by its last component only (never a server path)."""
    for path in sorted({str(Path(p).resolve()) for p in paths}, key=len, reverse=True):
        message = message.replace(path, Path(path).name or "<job>")
    return message


def _outcome_error(
    rc: int,
    cpu_used: float,
    limits: SandboxLimits,
    log_path: Path,
    result: dict[str, Any] | None,
    paths: tuple[str | os.PathLike[str], ...],
) -> EngineError:
    """The user-facing error: prunekit's own words; the child's output goes to the worker's log only."""
    tail = _tail(log_path)
    if tail:
        log.warning("last lines of the sandboxed job's output (exit %s):\n%s", rc, tail)
    if result is not None and not result.get("ok", False):
        error = dict(result.get("error", {}))
        error["message"] = redact_paths(str(error.get("message", "")), paths)
        return error_from_dict(error)
    if rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU or (
            sig == signal.SIGKILL and limits.cpu_seconds is not None and cpu_used >= limits.cpu_seconds
        ):
            return ResourceLimitError(
                f"the job exceeded the {limits.cpu_seconds} s CPU-time limit (all threads together); "
                "use fewer epochs or samples, or ask for a larger limit"
            )
        if sig == signal.SIGXFSZ:
            return file_size_error(limits.file_size_bytes)
        if sig == signal.SIGKILL:
            return ResourceLimitError(
                "the job was killed (SIGKILL), most likely because the machine ran out of memory: "
                f"{memory_limit_error(limits.memory_bytes).message}"
            )
        if any(h in tail for h in _MEMORY_HINTS):
            return memory_limit_error(limits.memory_bytes)
        return EngineError(f"the sandboxed job crashed ({_signal_name(sig)}); the details are in the worker's log")
    if any(h in tail for h in _MEMORY_HINTS):
        return memory_limit_error(limits.memory_bytes)
    return EngineError(
        f"the sandboxed job exited with status {rc} without a result; the details are in the worker's log"
    )


def run_isolated(
    target: str,
    payload: dict[str, Any],
    limits: SandboxLimits,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    *,
    grace_seconds: float = 5.0,
    cwd: str | os.PathLike[str] | None = None,
    preload: tuple[str, ...] = (),
    readable: tuple[str | os.PathLike[str], ...] = (),
    writable: tuple[str | os.PathLike[str], ...] = (),
) -> tuple[dict[str, Any], Isolation]:
    """Run `package.module:function(payload, emit) -> dict` in a sandboxed child; returns (result, Isolation).

    EngineErrors in the child are re-raised here as the same type; limit hits raise ResourceLimitError; if on_event
    raises (e.g. JobCanceledError), the child's process group gets SIGTERM, then SIGKILL, and the error propagates.
    The memory allowance starts after the target's module and `preload` modules are imported: import heavy
    libraries (torch) at module level or list them in `preload`, or their mappings count against the allowance.
    With `limits.isolate_filesystem`, the child can open only libraries, `readable` (read-only), `writable` and
    its own scratch folder (read-write); its HOME and TMPDIR point into that scratch folder.
    """
    workdir = Path(tempfile.mkdtemp(prefix="prunekit-sandbox-"))
    log_path = workdir / "child.log"
    paths = {name: str(workdir / f"{name}.json") for name in ("payload", "result", "sandbox", "config")}
    env = child_environment(limits.env_allow)
    if limits.threads is not None:
        env.update(thread_environment(limits.threads))  # read when the libraries load, before any job code
    confinement = None
    if limits.isolate_filesystem:
        confinement = _confinement(workdir, target, preload, readable, writable, limits)
    if confinement is not None:
        env.update(_scratch_environment(workdir))
    read_fd, write_fd = os.pipe()
    proc: subprocess.Popen[bytes] | None = None
    try:
        Path(paths["payload"]).write_text(json.dumps(payload, default=str))
        config = {
            "target": target,
            "payload_path": paths["payload"],
            "result_path": paths["result"],
            "sandbox_path": paths["sandbox"],
            "event_fd": write_fd,
            "parent_pid": os.getpid(),
            "limits": asdict(limits),
            "sys_path": [p for p in sys.path if p],  # the child imports the target as this process would
            "preload": list(preload),
            "confinement": asdict(confinement) if confinement is not None else None,
        }
        Path(paths["config"]).write_text(json.dumps(config))
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker.engine.child", paths["config"]],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        os.close(write_fd)
        write_fd = -1
        rc, cpu_used = _supervise(proc, read_fd, on_event, limits, grace_seconds)
        result = json.loads(Path(paths["result"]).read_text()) if Path(paths["result"]).exists() else None
        if rc != 0 or result is None or not result.get("ok", False):
            raise _outcome_error(rc, cpu_used, limits, log_path, result, (workdir, *readable, *writable))
        sandbox = json.loads(Path(paths["sandbox"]).read_text())
        isolation = Isolation(
            child_process=True,
            rlimits=sandbox["rlimits"],
            network=sandbox["network"],
            filesystem=sandbox["filesystem"],
            environment=_describe_environment(env, limits.env_allow),
        )
        if limits.memory_bytes is not None and sandbox["rlimits"].get("RLIMIT_AS") is None:
            log.warning("memory limit of %s not applied (CUDA job)", human_bytes(limits.memory_bytes))
        if isolation.network != "isolated":
            log.warning("sandbox network: %s", isolation.network)
        if not isolation.filesystem.startswith("isolated"):
            log.warning("sandbox file system: %s", isolation.filesystem)
        return result["result"], isolation
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)
        if proc is not None and proc.returncode is None:  # an exception escaped before the child ended
            _terminate(proc, grace_seconds)
        shutil.rmtree(workdir, ignore_errors=True)


def _confinement(
    workdir: Path,
    target: str,
    preload: tuple[str, ...],
    readable: tuple[str | os.PathLike[str], ...],
    writable: tuple[str | os.PathLike[str], ...],
    limits: SandboxLimits,
) -> Confinement:
    modules = (target.partition(":")[0], *preload)
    return job_confinement(readable, (workdir, *writable), modules, limits.uses_cuda, limits.isolate_network)


def _scratch_environment(workdir: Path) -> dict[str, str]:
    # Libraries write caches under HOME and temporary files under TMPDIR: both must be inside the sandbox.
    home, tmp = workdir / "home", workdir / "tmp"
    home.mkdir()
    tmp.mkdir()
    return {"HOME": str(home), "TMPDIR": str(tmp)}


def _supervise(
    proc: subprocess.Popen[bytes],
    read_fd: int,
    on_event: Callable[[dict[str, Any]], None] | None,
    limits: SandboxLimits,
    grace_seconds: float,
) -> tuple[int, float]:
    pump = _EventPump(read_fd, on_event)
    deadline = time.monotonic() + limits.wall_seconds if limits.wall_seconds else None
    with selectors.DefaultSelector() as selector:
        selector.register(read_fd, selectors.EVENT_READ)
        open_pipe = True
        while True:
            try:
                if open_pipe and selector.select(timeout=0.2):
                    open_pipe = pump.read_available()
                    if not open_pipe:
                        selector.unregister(read_fd)
                elif not open_pipe:
                    time.sleep(0.05)
                done = _reap(proc.pid, block=False)
                if done is not None:
                    proc.returncode = done[0]
                    # Subprocesses the job forked may still hold the pipe: drain what is there, then stop.
                    if open_pipe:
                        pump.read_available()
                    _kill_group(proc.pid, signal.SIGKILL)
                    return done
                if deadline is not None and time.monotonic() > deadline:
                    _terminate(proc, grace_seconds)
                    raise ResourceLimitError(
                        f"the job ran longer than its {limits.wall_seconds:g} s wall-clock limit and was stopped"
                    )
            except BaseException:
                if proc.returncode is None:
                    _terminate(proc, grace_seconds)
                raise
