"""Leases of running jobs and trials: renewed by a heartbeat thread, lost when another worker takes over."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from datetime import timedelta

from jobstore import lifecycle
from jobstore.db import utcnow
from jobstore.repositories import jobs as jobs_repo
from jobstore.repositories import trials as trials_repo
from prunekit.spec.api import TERMINAL_STATUSES
from worker.context import WorkerContext
from worker.engine.errors import JobCanceledError
from worker.heartbeat import Heartbeat


class LeaseLost(JobCanceledError):
    """Our lease was taken over (we were presumed dead); stop without writing anything."""

    code = "lease_lost"


def new_lease_token() -> str:
    """A lease token that also says which process holds the lease (for logs and the database)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(6)}"


def worker_id() -> str:
    """Which process runs a trial: `<hostname>:<pid>`."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}"


class LeaseKeeper(Heartbeat):
    """Renews the attempt's lease and polls the cancel flag, independently of the engine's pace."""

    def __init__(self, ctx: WorkerContext, job_id: str, token: str) -> None:
        super().__init__(f"lease-{job_id}", ctx.settings.heartbeat_seconds)
        self.ctx, self.job_id, self.token = ctx, job_id, token
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()
        self._expires = time.monotonic() + ctx.settings.lease_seconds  # the claim just set the lease

    def deadline(self) -> float:
        """When (time.monotonic()) the lease runs out unless renewed: the end of any retrying."""
        return self._expires

    def beat(self) -> bool:
        lease = timedelta(seconds=self.ctx.settings.lease_seconds)
        started = time.monotonic()
        with self.ctx.db.session() as s:
            answer = lifecycle.renew(s, self.job_id, self.token, utcnow() + lease)
        self._expires = started + lease.total_seconds()
        if answer is None:
            self.lost.set()
            return False
        if answer:
            self.cancel_requested.set()
        return True

    def raise_if_stopped(self) -> None:
        """Raise LeaseLost or JobCanceledError once the lease is gone or cancel was requested."""
        if self.lost.is_set():
            raise LeaseLost("this attempt lost its lease; another worker owns the job now")
        if self.cancel_requested.is_set():
            raise JobCanceledError(lifecycle.CANCELED_BY_REQUEST)


def sweep_over(ctx: WorkerContext, job_id: str) -> bool:
    """The sweep job needs no more trials run: deleted, ended, or asked to cancel."""
    with ctx.db.session() as s:
        job = jobs_repo.get_job_any(s, job_id)
    return job is None or job.status in TERMINAL_STATUSES or job.cancel_requested


class TrialKeeper(Heartbeat):
    """Renews one trial's lease; flags the trial to stop when the lease is lost or the job canceled/ended."""

    def __init__(self, ctx: WorkerContext, job_id: str, idx: int, token: str) -> None:
        super().__init__(f"trial-{job_id}-{idx}", ctx.settings.heartbeat_seconds)
        self.ctx, self.job_id, self.idx, self.token = ctx, job_id, idx, token
        self.abort = threading.Event()
        self.reason = ""

    def beat(self) -> bool:
        lease = timedelta(seconds=self.ctx.settings.lease_seconds)
        with self.ctx.db.session() as s:
            ours = trials_repo.renew(s, self.job_id, self.idx, self.token, utcnow() + lease)
        if not ours:
            self.reason = "this worker lost the trial's lease"
        elif sweep_over(self.ctx, self.job_id):
            self.reason = "the sweep job was canceled or has ended"
        else:
            return True
        self.abort.set()
        return False
