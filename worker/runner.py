"""Runs one job for a Celery task: claim, download inputs, run the engine, publish, finish.

Framework-free apart from the database and storage; the Celery task is a thin adapter over
`execute_job`. A job's state of record is its database row, changed only by conditional
updates that hold the lease token of this attempt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from prunekit.spec import SpecError, parse_spec
from service.core.broker import Broker
from service.core.config import Settings
from service.core.db import Database, utcnow
from service.core.models import JobRecord
from service.files import repository as files_repo
from service.jobs import repository as jobs_repo
from service.jobs.schemas import TERMINAL
from service.storage import ObjectMissing, Storage, make_storage
from worker.engine.errors import EngineError, JobCanceledError
from worker.engine.progress import ProgressEvent
from worker.heartbeat import Heartbeat, is_transient, retry_transient

log = logging.getLogger(__name__)

_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,12}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,100}$")


@dataclass
class WorkerContext:
    settings: Settings
    db: Database
    storage: Storage
    broker: Broker


def make_context(settings: Settings, broker: Broker) -> WorkerContext:
    return WorkerContext(settings, Database(settings.database_url), make_storage(settings), broker)


class LeaseLost(JobCanceledError):
    """Our lease was taken over (we were presumed dead); stop without writing anything."""

    code = "lease_lost"


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
            answer = jobs_repo.renew_lease(s, self.job_id, self.token, utcnow() + lease)
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
            raise JobCanceledError("canceled by request")


def new_lease_token() -> str:
    """A lease token that also says which process holds the lease (for logs and the database)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(6)}"


def _jsonable(value: Any) -> Any:
    """Engine metrics may hold numpy scalars or NaN; the job store holds plain JSON."""
    try:
        data = json.loads(json.dumps(value, default=lambda o: float(o) if hasattr(o, "__float__") else str(o)))
    except (TypeError, ValueError):
        return {"repr": repr(value)[:2000]}

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(data)


class ProgressWriter:
    """The engine's progress sink: throttled writes to the job row, events, and the cancel check."""

    def __init__(self, ctx: WorkerContext, job_id: str, token: str, keeper: LeaseKeeper) -> None:
        self.ctx, self.job_id, self.token, self.keeper = ctx, job_id, token, keeper
        self._stage: str | None = None
        self._percent = 0.0
        self._events: list[dict[str, Any]] = []
        self._last_write = 0.0
        self._dirty = False

    def __call__(self, ev: ProgressEvent) -> None:
        self.keeper.raise_if_stopped()
        stage_changed = ev.stage != self._stage
        now = utcnow()
        if stage_changed:
            self._events.append(
                {"kind": "progress", "stage": ev.stage, "percent": ev.percent, "message": ev.message or ev.stage}
            )
        elif ev.metrics:
            self._events.append(
                {
                    "kind": "metric",
                    "stage": ev.stage,
                    "percent": ev.percent,
                    "message": ev.message,
                    "data": _jsonable(ev.metrics),
                }
            )
        elif ev.message:
            self._events.append({"kind": "log", "stage": ev.stage, "percent": ev.percent, "message": ev.message})
        if stage_changed and ev.metrics:
            self._events[-1]["data"] = _jsonable(ev.metrics)
        for e in self._events:
            e.setdefault("ts", now)
        self._stage, self._percent, self._dirty = ev.stage, float(ev.percent), True
        if stage_changed or ev.metrics or time.monotonic() - self._last_write >= self.ctx.settings.progress_interval:
            self.flush()

    def flush(self) -> None:
        """Write pending progress; a transient database error keeps it for the next write (the engine runs on)."""
        try:
            self._write()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            self._last_write = time.monotonic()
            log.warning("job %s: progress not written (%s); will retry", self.job_id, type(exc).__name__)

    def flush_final(self) -> None:
        """Write pending progress, retrying transient database errors while the lease lasts."""
        retry_transient(self._write, self.keeper.deadline(), f"job {self.job_id} progress")

    def _write(self) -> None:
        if not self._dirty and not self._events:
            return
        with self.ctx.db.session() as s:
            if not jobs_repo.set_progress(s, self.job_id, self.token, self._stage, self._percent, utcnow()):
                self.keeper.lost.set()
                return
            for e in self._events:
                jobs_repo.add_event(
                    s,
                    self.job_id,
                    e["kind"],
                    str(e.get("message") or "")[:4000],
                    stage=e.get("stage"),
                    percent=e.get("percent"),
                    data=e.get("data"),
                    ts=e["ts"],
                )
        self._events, self._dirty = [], False
        self._last_write = time.monotonic()


def _suffix(name: str) -> str:
    """A harmless extension from the user's file name for the local temp copy (keys never use it)."""
    suffix = Path(name).suffix
    return suffix.lower() if _SAFE_SUFFIX.match(suffix) else ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def download_inputs(ctx: WorkerContext, job: JobRecord, folder: Path) -> tuple[Path, Path | None]:
    """Fetch the job's model (and dataset) from storage into `folder`."""
    with ctx.db.session() as s:
        model_rec = files_repo.get_file_any(s, job.model_file_id)
        data_rec = files_repo.get_file_any(s, job.data_file_id) if job.data_file_id else None
    if model_rec is None or (job.data_file_id and data_rec is None):
        raise ObjectMissing("an input file of this job was deleted")
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"model{_suffix(model_rec.name)}"
    ctx.storage.get_file(model_rec.storage_key, model_path)
    data_path = None
    if data_rec is not None:
        data_path = folder / f"data{_suffix(data_rec.name)}"
        ctx.storage.get_file(data_rec.storage_key, data_path)
    return model_path, data_path


def _notify(ctx: WorkerContext, job_id: str) -> None:
    """Queue the webhook of a job that just reached a terminal state (if it has one)."""
    with ctx.db.session() as s:
        job = jobs_repo.get_job_any(s, job_id)
        if job is None or not job.webhook_url:
            return
        jobs_repo.set_webhook_state(s, job_id, "pending")
        queue = job.queue
    try:
        ctx.broker.send_webhook(job_id, queue)
    except Exception:  # the job's state is final either way; a lost notification is only logged
        log.exception("could not enqueue the webhook of job %s", job_id)


def _finish(keeper: LeaseKeeper, status: str, on_done: Callable[[Session, str], None], **values: Any) -> str | None:
    """The terminal conditional update (plus `on_done` in its transaction), retried through transient errors.

    Returns the state recorded (`canceled` if a cancel was accepted meanwhile), or None when the lease is lost.
    """
    ctx, job_id, token, now = keeper.ctx, keeper.job_id, keeper.token, utcnow()
    tries = 0

    def once() -> str | None:
        nonlocal tries
        tries += 1
        with ctx.db.session() as s:
            recorded = jobs_repo.finish(s, job_id, token, status, now, **values)
            if recorded is not None:
                on_done(s, recorded)
            elif tries > 1:  # an earlier try may have committed before its connection dropped
                return _finished_at(s, job_id, now)
        return recorded

    return retry_transient(once, keeper.deadline(), f"job {job_id} finish")


def _finished_at(session: Session, job_id: str, now: datetime) -> str | None:
    """The job's terminal state if it was written with exactly our `now` (by us), else None."""
    job = jobs_repo.get_job_any(session, job_id)
    return job.status if job is not None and job.status in TERMINAL and job.finished_at == now else None


def _notify_soon(ctx: WorkerContext, job_id: str) -> None:
    """`_notify`, retrying transient database errors for up to one lease period."""
    deadline = time.monotonic() + ctx.settings.lease_seconds
    retry_transient(lambda: _notify(ctx, job_id), deadline, f"job {job_id} webhook")


def _end(keeper: LeaseKeeper, status: str, message: str, **values: Any) -> bool:
    """Finish the job as `status` with an event saying `message` (a cancel accepted meanwhile wins)."""

    def event(s: Session, recorded: str) -> None:
        jobs_repo.add_event(s, keeper.job_id, "state", message if recorded == status else "canceled by request")

    recorded = _finish(keeper, status, event, **values)
    if recorded is not None:
        _notify_soon(keeper.ctx, keeper.job_id)
    return recorded is not None


def internal_error_message(job_id: str) -> str:
    """What users are told about a worker fault: prunekit's words only (never SQL, parameters or tokens)."""
    return f"internal error in the worker; the details are in the worker's log (reference {job_id})"


def _handle_unclaimed(ctx: WorkerContext, job_id: str) -> str:
    now = utcnow()
    with ctx.db.session() as s:
        job = jobs_repo.get_job_any(s, job_id)
        if job is None:
            return "missing"
        if job.status in TERMINAL:
            return "already_" + job.status
        live = job.status == "running" and job.lease_expires_at is not None and job.lease_expires_at >= now
        if live:
            # Another attempt holds a live lease (e.g. a redelivered message): never run it twice.
            return "busy"
        if job.cancel_requested:
            if jobs_repo.cancel_unclaimable(s, job_id, now):
                jobs_repo.add_event(s, job_id, "state", "canceled")
                s.commit()
                _notify(ctx, job_id)
            return "canceled"
        if job.attempts >= ctx.settings.max_attempts:
            msg = give_up_message(job.attempts)
            if jobs_repo.fail_unclaimable(s, job_id, now, "worker_lost", msg):
                jobs_repo.add_event(s, job_id, "state", msg)
                s.commit()
                _notify(ctx, job_id)
            return "failed"
    return "not_claimed"


def give_up_message(attempts: int) -> str:
    return (
        f"the job's worker stopped (killed, out of memory or crashed) during each of its {attempts} attempts; "
        "it will not be retried. Try a smaller model or batch size, or ask the operator for the worker logs."
    )


class DatabaseUnavailable(Exception):
    """The job could not even be claimed: the message must be retried, not dropped."""


def execute_job(ctx: WorkerContext, job_id: str) -> str:
    """Run one job if we can claim it; returns what happened (for logs)."""
    token = new_lease_token()
    settings = ctx.settings
    try:
        with ctx.db.session() as s:
            claimed = jobs_repo.claim(
                s, job_id, token, utcnow(), timedelta(seconds=settings.lease_seconds), settings.max_attempts
            )
            job = jobs_repo.get_job_any(s, job_id) if claimed else None
            if job is not None:
                jobs_repo.add_event(s, job_id, "state", f"running (attempt {job.attempts} of {settings.max_attempts})")
    except DBAPIError as exc:
        # Nothing has happened yet; after the claim, a lost database is handled by lease expiry instead.
        raise DatabaseUnavailable(f"cannot claim job {job_id}: {exc}") from exc
    if job is None:
        outcome = _handle_unclaimed(ctx, job_id)
        log.info("job %s not run: %s", job_id, outcome)
        return outcome

    keeper = LeaseKeeper(ctx, job_id, token)
    keeper.start()
    prefix = f"jobs/{job_id}/a{job.attempts}-{secrets.token_hex(4)}/"
    try:
        return _run_claimed(ctx, job, token, keeper, prefix)
    finally:
        keeper.stop()


def _run_claimed(ctx: WorkerContext, job: JobRecord, token: str, keeper: LeaseKeeper, prefix: str) -> str:
    from worker.engine.api import JobInputs, default_limits, run_job  # torch is imported here, in the worker only

    settings = ctx.settings
    writer = ProgressWriter(ctx, job.id, token, keeper)
    work_root = settings.work_dir
    if work_root is not None:
        work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{job.id}-", dir=work_root) as tmp:
        tmpdir = Path(tmp)
        try:
            spec = parse_spec(job.spec)
            model_path, data_path = download_inputs(ctx, job, tmpdir / "in")
            if spec.kind == "sweep":
                # Each trial is claimed from the job_trials table by this task or any `run_trial` task.
                from worker.sweeps import run_distributed_sweep

                outputs = run_distributed_sweep(ctx, job, spec, writer, keeper, model_path, data_path, tmpdir)
            else:
                out_dir = tmpdir / "out"
                out_dir.mkdir()
                outputs = run_job(
                    JobInputs(model_path=model_path, spec=spec, data_path=data_path),
                    out_dir,
                    progress=writer,
                    isolate=settings.engine_isolate,
                    limits=default_limits(spec.device, settings.sandbox_memory_bytes),
                )
            writer.flush_final()
        except JobCanceledError as exc:
            return _stop(keeper, str(exc))
        except EngineError as exc:
            return _failed(keeper, exc.code, exc.message)
        except SoftTimeLimitExceeded:
            msg = f"the job ran longer than the server's limit of {settings.job_soft_time_limit} s and was stopped"
            return _failed(keeper, "time_limit", msg)
        except SpecError as exc:
            return _failed(keeper, "invalid_spec", str(exc))
        except ObjectMissing as exc:
            return _failed(keeper, "input_missing", f"an input file is missing from storage ({exc}); upload it again")
        except Exception:
            # A bug or an infrastructure failure, not the user's input: the full exception goes to the log only.
            log.exception("job %s failed unexpectedly (reference %s)", job.id, job.id)
            return _failed(keeper, "internal_error", internal_error_message(job.id))

        if keeper.lost.is_set():
            return "lease_lost"
        if keeper.cancel_requested.is_set():
            return _stop(keeper, "canceled by request")
        return _publish(keeper, job, prefix, outputs)


def _failed(keeper: LeaseKeeper, code: str, message: str) -> str:
    """End the job as failed with `code` and the user-facing `message`; returns the outcome for logs."""
    if not _end(keeper, "failed", f"failed: {code}", error_code=code, error_message=message):
        return "lease_lost"
    return "failed"


def _stop(keeper: LeaseKeeper, message: str) -> str:
    if keeper.lost.is_set():
        log.warning("job %s: lease lost, this attempt stops without writing", keeper.job_id)
        return "lease_lost"
    _end(keeper, "canceled", message or "canceled")
    return "canceled"


def _publish(keeper: LeaseKeeper, job: JobRecord, prefix: str, outputs: Any) -> str:
    """Upload under this attempt's prefix, then point the job row at it in one conditional update."""
    ctx, storage = keeper.ctx, keeper.ctx.storage
    values: dict[str, Any] = {}
    try:
        if outputs.artifact_path is not None:
            path = Path(outputs.artifact_path)
            name = path.name if _SAFE_NAME.match(path.name) else "model.bin"
            values.update(
                artifact_key=prefix + name,
                artifact_name=name,
                artifact_size=path.stat().st_size,
                artifact_sha256=_sha256(path),
            )
            storage.put_file(prefix + name, path)
        storage.put_file(prefix + "report.json", Path(outputs.report_path))
        values["report_key"] = prefix + "report.json"
        html = getattr(outputs, "html_path", None)
        if html is not None and Path(html).is_file():
            storage.put_file(prefix + "report.html", Path(html))
            values["report_html_key"] = prefix + "report.html"
        report = outputs.report
        values.update(
            gate_status=report.status,
            gates=[g.model_dump(mode="json") for g in report.gates],
            stage=None,
            percent=100.0,
        )

        def events(s: Session, recorded: str) -> None:
            if recorded != "succeeded":
                jobs_repo.add_event(s, job.id, "state", "canceled by request; the result was discarded")
                return
            jobs_repo.add_stage_durations(s, job.id, dict(report.stage_seconds))
            jobs_repo.add_event(s, job.id, "state", f"succeeded ({report.status})")

        recorded = _finish(keeper, "succeeded", events, **values)
    except BaseException:
        storage.delete_prefix(prefix)
        raise
    if recorded != "succeeded":
        storage.delete_prefix(prefix)
        if recorded is None:
            return "lease_lost"
        _notify_soon(ctx, job.id)
        return recorded
    # Earlier attempts that died mid-upload may have left files: the job has exactly one artifact.
    for key in storage.list(f"jobs/{job.id}/"):
        if not key.startswith(prefix):
            storage.delete(key)
    _notify_soon(ctx, job.id)
    return "succeeded"
