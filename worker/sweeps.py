"""Distributed sweeps: the trials of one sweep job run on any number of workers.

The job's own task (`prunekit.run_job`) creates one `job_trials` row per trial, sends `len(trials) - 1`
`prunekit.run_trial` messages to the job's queue, and then claims and runs trials itself, like every
`run_trial` task does. A trial is claimed with one conditional UPDATE (pending, or running with an expired
lease), runs into a temp folder, and its report.json and artifact are uploaded under
`jobs/<job id>/trials/<idx>-<hex>/` before the row is marked done. When nothing is left to claim, the job's
task waits until every trial is done or failed (reclaiming trials whose worker died), downloads the results,
summarizes them with the engine's `finalize_sweep` and publishes the job as usual. `run_trial` tasks never
finalize and return as soon as nothing is claimable, so one worker with concurrency 1 runs a whole sweep
alone (the extra messages find nothing to do), and several workers split the trials.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from prunekit.spec import JobSpec, SpecError, parse_spec
from service.core.db import utcnow
from service.core.models import JobRecord, JobTrial
from service.jobs import repository as jobs_repo
from service.jobs import trials_repository as trials_repo
from service.jobs.schemas import TERMINAL
from worker.engine.errors import EngineError, JobCanceledError
from worker.engine.progress import ProgressEvent
from worker.heartbeat import Heartbeat
from worker.runner import (
    _SAFE_NAME,
    LeaseKeeper,
    ProgressWriter,
    WorkerContext,
    download_inputs,
    new_lease_token,
)

log = logging.getLogger(__name__)


def worker_id() -> str:
    """Which process runs a trial: `<hostname>:<pid>`."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}"


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
            ended = _over(jobs_repo.get_job_any(s, self.job_id))
        if not ours:
            self.reason = "this worker lost the trial's lease"
        elif ended:
            self.reason = "the sweep job was canceled or has ended"
        else:
            return True
        self.abort.set()
        return False


class _Inputs:
    """The job's input files, downloaded once per task and only when a trial was claimed."""

    def __init__(self, ctx: WorkerContext, job: JobRecord, folder: Path, ready: tuple[Path, Path | None] | None = None):
        self.ctx, self.job, self.folder, self._paths = ctx, job, folder, ready

    def get(self) -> tuple[Path, Path | None]:
        if self._paths is None:
            self._paths = download_inputs(self.ctx, self.job, self.folder)
        return self._paths


def _over(job: JobRecord | None) -> bool:
    """The sweep job needs no more trials run: deleted, ended, or asked to cancel."""
    return job is None or job.status in TERMINAL or job.cancel_requested


def _job_gone(ctx: WorkerContext, job_id: str) -> bool:
    with ctx.db.session() as s:
        return _over(jobs_repo.get_job_any(s, job_id))


def work_on_trials(
    ctx: WorkerContext,
    job: JobRecord,
    plans: list[Any],
    inputs: _Inputs,
    tmp_root: Path,
    check: Callable[[], None],
    tick: Callable[[], None],
) -> int:
    """Claim and run trials of the job until none is claimable; returns how many this process ran.

    `check` raises to stop (the job's own task: cancel or lost lease); `tick` is called during and
    after each trial (the job's own task refreshes the job's percent there).
    """
    settings = ctx.settings
    lease = timedelta(seconds=settings.lease_seconds)
    ran = 0
    while True:
        check()
        if _job_gone(ctx, job.id):
            return ran
        token = new_lease_token()
        with ctx.db.session() as s:
            trial = trials_repo.claim_next(s, job.id, token, worker_id(), utcnow(), lease, settings.max_attempts)
        if trial is None:
            return ran
        _run_trial(ctx, job, plans[trial.idx], trial, token, inputs, tmp_root, check, tick)
        ran += 1
        tick()


def _run_trial(
    ctx: WorkerContext,
    job: JobRecord,
    plan: Any,
    trial: JobTrial,
    token: str,
    inputs: _Inputs,
    tmp_root: Path,
    check: Callable[[], None],
    tick: Callable[[], None],
) -> None:
    from worker.engine.api import JobInputs, default_limits, run_job

    idx = trial.idx
    keeper = TrialKeeper(ctx, job.id, idx, token)
    keeper.start()
    trial_dir = Path(tempfile.mkdtemp(prefix=f"trial{idx}-", dir=tmp_root))

    def sink(_: ProgressEvent) -> None:
        if keeper.abort.is_set():
            raise JobCanceledError(keeper.reason)
        check()
        tick()

    def release() -> None:
        with ctx.db.session() as s:
            trials_repo.release(s, job.id, idx, token, utcnow())

    def fail(code: str, message: str) -> None:
        with ctx.db.session() as s:
            if trials_repo.finish(s, job.id, idx, token, "failed", utcnow(), error_code=code, error_message=message):
                jobs_repo.add_event(s, job.id, "log", f"trial {plan.name} failed on {worker_id()}: {code}")

    try:
        try:
            model_path, data_path = inputs.get()
            outputs = run_job(
                JobInputs(model_path=model_path, spec=plan.spec, data_path=data_path),
                trial_dir / "out",
                progress=sink,
                isolate=ctx.settings.engine_isolate,
                limits=default_limits(plan.spec.device, ctx.settings.sandbox_memory_bytes),
                render_report=False,
            )
            if keeper.abort.is_set():
                raise JobCanceledError(keeper.reason)
        except (JobCanceledError, SoftTimeLimitExceeded):
            release()
            raise
        except EngineError as exc:
            fail(exc.code, exc.message)
            return
        except Exception as exc:
            log.exception("trial %d of job %s failed unexpectedly", idx, job.id)
            fail("internal_error", f"internal error in the worker: {type(exc).__name__}: {exc}"[:2000])
            return
        _upload_result(ctx, job, plan, idx, token, outputs)
    finally:
        keeper.stop()
        shutil.rmtree(trial_dir, ignore_errors=True)


def _upload_result(ctx: WorkerContext, job: JobRecord, plan: Any, idx: int, token: str, outputs: Any) -> None:
    prefix = f"jobs/{job.id}/trials/{idx:03d}-{secrets.token_hex(4)}/"
    storage = ctx.storage
    ok = False
    try:
        if outputs.artifact_path is not None:
            path = Path(outputs.artifact_path)
            if not _SAFE_NAME.match(path.name):
                raise EngineError(f"trial {plan.name} wrote an artifact with an unexpected name")
            storage.put_file(prefix + path.name, path)
        storage.put_file(prefix + "report.json", Path(outputs.report_path))
        with ctx.db.session() as s:
            ok = trials_repo.finish(
                s, job.id, idx, token, "done", utcnow(), result_key=prefix, error_code=None, error_message=None
            )
            if ok:
                jobs_repo.add_event(s, job.id, "log", f"trial {plan.name} done on {worker_id()}")
    finally:
        if not ok:
            storage.delete_prefix(prefix)


class _JobPercent:
    """Writes the job's percent (finished trials / all trials) through its ProgressWriter, throttled."""

    def __init__(self, ctx: WorkerContext, job_id: str, total: int, writer: ProgressWriter) -> None:
        self.ctx, self.job_id, self.total, self.writer = ctx, job_id, total, writer
        self._finished = -1
        self._last = 0.0

    def tick(self) -> None:
        if time.monotonic() - self._last < self.ctx.settings.progress_interval:
            return
        with self.ctx.db.session() as s:
            rows = trials_repo.list_trials(s, self.job_id)
        self.update(rows)

    def update(self, rows: Any) -> None:
        self._last = time.monotonic()
        finished = sum(1 for r in rows if r.status in trials_repo.FINISHED)
        if finished != self._finished:
            self._finished = finished
            percent = 100.0 * finished / max(1, self.total)
            self.writer(ProgressEvent("trials", percent, f"{finished} of {self.total} trials finished"))


def run_distributed_sweep(
    ctx: WorkerContext,
    job: JobRecord,
    spec: JobSpec,
    writer: ProgressWriter,
    keeper: LeaseKeeper,
    model_path: Path,
    data_path: Path | None,
    tmpdir: Path,
) -> Any:
    """The job's own task: share the trials out, run some, wait for the rest, finalize; returns JobOutputs."""
    from worker.engine.analysis.sweep import finalize_sweep, plan_sweep
    from worker.engine.api import JobOutputs, render_html

    settings = ctx.settings
    plans = plan_sweep(spec)
    with ctx.db.session() as s:
        trials_repo.create_trials(s, job.id, [p.name for p in plans], utcnow())
        rows = trials_repo.list_trials(s, job.id)
        jobs_repo.add_event(s, job.id, "log", f"sweep of {len(plans)} trials; any worker on '{job.queue}' may help")
    unfinished = sum(1 for r in rows if r.status not in trials_repo.FINISHED)
    for _ in range(max(0, unfinished - 1)):
        try:
            ctx.broker.send_trial(job.id, job.queue)
        except Exception:  # the job's own task runs whatever nobody else takes
            log.warning("could not send a trial task for job %s", job.id, exc_info=True)
            break

    percent = _JobPercent(ctx, job.id, len(plans), writer)
    percent.update(rows)
    inputs = _Inputs(ctx, job, tmpdir / "in", (model_path, data_path))
    trials_tmp = tmpdir / "trial-work"
    trials_tmp.mkdir(exist_ok=True)
    while True:
        work_on_trials(ctx, job, plans, inputs, trials_tmp, keeper.raise_if_stopped, percent.tick)
        with ctx.db.session() as s:
            trials_repo.fail_exhausted(
                s, job.id, utcnow(), settings.max_attempts, "the trial's worker stopped during each of its attempts"
            )
            rows = trials_repo.list_trials(s, job.id)
        percent.update(rows)
        if all(r.status in trials_repo.FINISHED for r in rows):
            break
        keeper.raise_if_stopped()
        time.sleep(settings.heartbeat_seconds)

    done = [r for r in rows if r.status == "done"]
    failed = [r for r in rows if r.status == "failed"]
    if not done:
        first = failed[0]
        err = EngineError(f"every trial failed; the first, {first.name}: {first.error_message}")
        err.code = first.error_code or "engine_error"
        raise err
    trial_dirs = []
    for r in done:
        trial_dir = tmpdir / "trials" / f"{r.idx:03d}"
        trial_dir.mkdir(parents=True)
        prefix = r.result_key or ""
        ctx.storage.get_file(prefix + "report.json", trial_dir / "report.json")
        artifact = json.loads((trial_dir / "report.json").read_text()).get("artifact_name")
        if artifact:
            if not _SAFE_NAME.match(artifact):
                raise EngineError(f"trial {r.name} names an unexpected artifact")
            ctx.storage.get_file(prefix + artifact, trial_dir / artifact)
        trial_dirs.append(trial_dir)
    out_dir = tmpdir / "out"
    report = finalize_sweep(spec, [plans[r.idx] for r in done], trial_dirs, out_dir)
    report_path = out_dir / "report.json"
    if failed:
        report = report.model_copy(
            update={
                "extra": {
                    **report.extra,
                    "trials_failed": [
                        {"name": r.name, "error_code": r.error_code, "error_message": r.error_message} for r in failed
                    ],
                },
                "notes": [*report.notes, f"{len(failed)} of {len(rows)} trials failed and are left out"],
            }
        )
        report_path.write_text(report.model_dump_json(indent=2))
    workers = sorted({r.worker for r in rows if r.worker})
    log.info("sweep %s: %d trials done, %d failed, on %s", job.id, len(done), len(failed), ", ".join(workers))
    artifact_path = out_dir / report.artifact_name if report.artifact_name else None
    return JobOutputs(
        report=report, report_path=report_path, artifact_path=artifact_path, html_path=render_html(report, out_dir)
    )


def _nothing() -> None:
    """A `run_trial` task has no job lease to check and no job percent to write."""


def execute_trials(ctx: WorkerContext, job_id: str) -> str:
    """A `run_trial` task: help with the trials of a sweep job; never finalizes. Returns what happened."""
    with ctx.db.session() as s:
        job = jobs_repo.get_job_any(s, job_id)
    if job is None or _over(job):
        return "nothing_to_do"
    try:
        spec = parse_spec(job.spec)
        if spec.kind != "sweep":
            return "not_a_sweep"
        from worker.engine.analysis.sweep import plan_sweep

        plans = plan_sweep(spec)
    except (SpecError, EngineError) as exc:
        return f"invalid_spec: {exc}"[:200]

    work_root = ctx.settings.work_dir
    if work_root is not None:
        work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{job.id}-trials-", dir=work_root) as tmp:
        tmpdir = Path(tmp)
        try:
            ran = work_on_trials(ctx, job, plans, _Inputs(ctx, job, tmpdir / "in"), tmpdir, _nothing, _nothing)
        except JobCanceledError as exc:
            return f"stopped: {exc}"
    return f"ran {ran} trials"
