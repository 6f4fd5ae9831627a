"""`python -m service.embedded`: the API and one worker on one machine, nothing else to install.

Defaults: SQLite in ./var, kombu's filesystem transport in ./var/broker, storage in ./var/storage.
Jobs never run inside the API process: the worker is a separate Celery process, restarted if it dies.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import uvicorn

from jobstore.db import run_migrations
from jobstore.settings import Settings

log = logging.getLogger("prunekit.embedded")


def _die_with_parent() -> None:
    """In the worker child (Linux): get SIGTERM when the embedded server dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: stop() still ends the worker on a normal exit
        pass


def _exit_on_signal(signum: int, _frame: object) -> None:
    # uvicorn shuts down gracefully, restores this handler and re-raises the signal: exit through
    # `finally` so the worker is stopped too.
    raise SystemExit(128 + signum)


class WorkerProcess:
    """The embedded Celery worker, restarted with backoff when it exits unexpectedly."""

    def __init__(self, env: dict[str, str], concurrency: int) -> None:
        self.env = env
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.main",
            "worker",
            "-Q",
            "cpu,gpu",
            "-c",
            str(self.concurrency),
            "-n",
            f"embedded-{os.getpid()}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "INFO",
        ]

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self.command(), env=self.env, start_new_session=True, preexec_fn=_die_with_parent)
        log.info("worker started (pid %s)", self.proc.pid)

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            assert self.proc is not None
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            log.error("the worker exited with %s; restarting in %.0f s", code, delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, 30.0)
            self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # warm shutdown: the running job finishes or is requeued later
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.embedded", description=__doc__)
    parser.add_argument("--host", help="bind address (default PRUNEKIT_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default PRUNEKIT_PORT or 8000)")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs run at once by the worker")
    parser.add_argument(
        "--no-auth", action="store_true", help="no API keys: for local use only (same as PRUNEKIT_AUTH_DISABLED=true)"
    )
    args = parser.parse_args(argv)

    env = dict(os.environ)
    if args.no_auth:
        env["PRUNEKIT_AUTH_DISABLED"] = "true"
    os.environ.update(env)
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = args.host or settings.host
    port = args.port or settings.port

    run_migrations(settings.database_url)
    env["PRUNEKIT_MIGRATE_ON_START"] = "false"
    os.environ["PRUNEKIT_MIGRATE_ON_START"] = "false"
    worker = WorkerProcess(env, args.concurrency)
    worker.start()
    log.info(
        "prunekit embedded: API on http://%s:%s (docs at /docs), database %s, broker %s, storage %s",
        host,
        port,
        settings.database_url,
        settings.broker_url,
        settings.storage_dir if settings.storage_backend == "local" else f"s3://{settings.s3_bucket}",
    )
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run("service.main:app_factory", factory=True, host=host, port=port, log_level="info")
    finally:
        log.info("stopping the worker (API ran %.0f s)", time.monotonic() - started)
        worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
