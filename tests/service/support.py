"""Helpers shared by the service and integration tests: real PostgreSQL databases, moto's S3 server,
and subprocesses (uvicorn, Celery workers) that can be killed with their whole process tree."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("PRUNEKIT_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PRUNEKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def create_pg_database() -> tuple[str, str]:
    """A fresh PostgreSQL database; returns (name, SQLAlchemy URL)."""
    name = f"prunekit_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin = PG_ADMIN.rsplit("/", 1)[0]
    return name, f"{admin.replace('postgresql://', 'postgresql+psycopg://')}/{name}"


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def descendants(pid: int) -> list[int]:
    """All processes below pid (Linux /proc), including those that started their own session."""
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for c in children:
                out.append(int(c))
                stack.append(int(c))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def kill_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send sig to a process and everything it started."""
    for pid in [*descendants(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        kill_tree(proc, signal.SIGKILL)


class ManagedProcess:
    """A subprocess with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT) -> None:
        self.name, self.cmd, self.env, self.cwd = name, cmd, env, cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0

    def start(self) -> ManagedProcess:
        # A restarted process appends to the same log; readiness checks look only at what it wrote.
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child keeps it)
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def log_text(self, since_start: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        return (data[self.log_offset :] if since_start else data).decode(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        tree = descendants(self.proc.pid)  # now, before they are orphaned and lose their link to us
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc)
        deadline = time.monotonic() + timeout
        for pid in tree:  # whatever a graceful stop left behind
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill9(self) -> None:
        assert self.proc is not None
        kill_tree(self.proc, signal.SIGKILL)


def start_api(env: dict[str, str], log_dir: Path, port: int, name: str = "api") -> ManagedProcess:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.main:app_factory",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = ManagedProcess(name, cmd, env, log_dir).start()

    def up() -> bool:
        if not proc.alive():
            raise RuntimeError(f"the API exited:\n{proc.log_text()[-4000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "the API to answer /livez")
    return proc


def start_worker(
    env: dict[str, str], log_dir: Path, name: str, queues: str = "cpu", concurrency: int = 1
) -> ManagedProcess:
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.main",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-n",
        f"{name}-{secrets.token_hex(3)}@%h",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "-l",
        "INFO",
    ]
    proc = ManagedProcess(name, cmd, env, log_dir).start()

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"the worker exited:\n{proc.log_text()[-4000:]}")
        return " ready." in proc.log_text(since_start=True)

    wait_for(ready, 60, "the Celery worker to be ready", interval=0.2)
    return proc


class MotoS3:
    """moto's S3 server as a real HTTP server on 127.0.0.1 (a subprocess)."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = ManagedProcess(
            "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], base_env(), log_dir
        ).start()

        def up() -> bool:
            try:
                httpx.get(self.endpoint, timeout=1)
                return True
            except httpx.HTTPError:
                return False

        wait_for(up, 30, "moto's S3 server")

    def stop(self) -> None:
        self.proc.stop()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRUNEKIT_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONUNBUFFERED": "1",
            # Two cores are shared by the API, the worker and the engine's child: keep torch to one thread each.
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
    )
    return env
