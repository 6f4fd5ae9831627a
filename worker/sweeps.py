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
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from celery.exceptions import SoftTimeLimitExceeded

from jobstore.db import utcnow
from jobstore.models import JobRecord, JobTrial
from jobstore.repositories import jobs as jobs_repo
from jobstore.repositories import trials as trials_repo
from prunekit.spec import JobSpec, SpecError, parse_spec
from prunekit.spec.api import FINISHED_TRIALS, ErrorCode, EventKind, TrialStatus
from worker.context import WorkerContext
from worker.engine.errors import EngineError, JobCanceledError
from worker.engine.progress import ProgressEvent
from worker.inputs import LazyInputs
from worker.leases import LeaseKeeper, TrialKeeper, new_lease_token, sweep_over, worker_id
from worker.outcomes import outcome_of
from worker.progress_writer import ProgressWriter
from worker.publishing import check_artifact_name, upload_outputs
from worker.slots import job_threads

if TYPE_CHECKING:
    from worker.engine.analysis.trials import TrialPlan
    from worker.engine.api import JobOutputs

log = logging.getLogger(__name__)


def work_on_trials(
    ctx: WorkerContext,
    job: JobRecord,
    plans: Sequence[TrialPlan],
    inputs: LazyInputs,
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
        if sweep_over(ctx, job.id):
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
    plan: TrialPlan,
    trial: JobTrial,
    token: str,
    inputs: LazyInputs,
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

    def fail(code: ErrorCode, message: str) -> None:
        with ctx.db.session() as s:
            failed = TrialStatus.FAILED
            if trials_repo.finish(s, job.id, idx, token, failed, utcnow(), error_code=code, error_message=message):
                jobs_repo.add_event(s, job.id, EventKind.LOG, f"trial {plan.name} failed on {worker_id()}: {code}")

    try:
        try:
            model_path, data_path = inputs.get()
            outputs = run_job(
                JobInputs(model_path=model_path, spec=plan.spec, data_path=data_path),
                trial_dir / "out",
                progress=sink,
                isolate=ctx.settings.engine_isolate,
                limits=default_limits(plan.spec.device, ctx.settings.sandbox_memory_bytes, job_threads(ctx.settings)),
                render_report=False,
            )
            if keeper.abort.is_set():
                raise JobCanceledError(keeper.reason)
        except (JobCanceledError, SoftTimeLimitExceeded):
            release()
            raise
        except Exception as exc:  # mapped by the one table in worker.outcomes, as a job's failure is
            outcome = outcome_of(exc, f"{job.id} trial {idx}", ctx.settings)
            fail(outcome.code or ErrorCode.ENGINE_ERROR, outcome.message)
            return
        _upload_result(ctx, job, plan, idx, token, outputs)
    finally:
        keeper.stop()
        shutil.rmtree(trial_dir, ignore_errors=True)


def _upload_result(
    ctx: WorkerContext, job: JobRecord, plan: TrialPlan, idx: int, token: str, outputs: JobOutputs
) -> None:
    prefix = f"jobs/{job.id}/trials/{idx:03d}-{secrets.token_hex(4)}/"
    ok = False
    try:
        upload_outputs(ctx.storage, prefix, outputs)
        with ctx.db.session() as s:
            done = TrialStatus.DONE
            ok = trials_repo.finish(
                s, job.id, idx, token, done, utcnow(), result_key=prefix, error_code=None, error_message=None
            )
            if ok:
                jobs_repo.add_event(s, job.id, EventKind.LOG, f"trial {plan.name} done on {worker_id()}")
    finally:
        if not ok:
            ctx.storage.delete_prefix(prefix)


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

    def update(self, rows: Sequence[JobTrial]) -> None:
        self._last = time.monotonic()
        finished = sum(1 for r in rows if r.status in FINISHED_TRIALS)
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
) -> JobOutputs:
    """The job's own task: share the trials out, run some, wait for the rest, finalize; returns JobOutputs."""
    from worker.engine.analysis.sweep import finalize_sweep, plan_sweep
    from worker.engine.api import JobOutputs, render_html

    settings = ctx.settings
    plans = plan_sweep(spec)
    with ctx.db.session() as s:
        trials_repo.create_trials(s, job.id, [p.name for p in plans], utcnow())
        rows = trials_repo.list_trials(s, job.id)
        jobs_repo.add_event(
            s, job.id, EventKind.LOG, f"sweep of {len(plans)} trials; any worker on '{job.queue}' may help"
        )
    unfinished = sum(1 for r in rows if r.status not in FINISHED_TRIALS)
    for _ in range(max(0, unfinished - 1)):
        try:
            ctx.broker.send_trial(job.id, job.queue)
        except Exception:  # the job's own task runs whatever nobody else takes
            log.warning("could not send a trial task for job %s", job.id, exc_info=True)
            break

    percent = _JobPercent(ctx, job.id, len(plans), writer)
    percent.update(rows)
    inputs = LazyInputs(ctx, job, tmpdir / "in", (model_path, data_path))
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
        if all(r.status in FINISHED_TRIALS for r in rows):
            break
        keeper.raise_if_stopped()
        time.sleep(settings.heartbeat_seconds)

    done = [r for r in rows if r.status == TrialStatus.DONE]
    failed = [r for r in rows if r.status == TrialStatus.FAILED]
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
            artifact = check_artifact_name(artifact)
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
    if job is None or sweep_over(ctx, job_id):
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
            ran = work_on_trials(ctx, job, plans, LazyInputs(ctx, job, tmpdir / "in"), tmpdir, _nothing, _nothing)
        except JobCanceledError as exc:
            return f"stopped: {exc}"
    return f"ran {ran} trials"
