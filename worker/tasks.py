"""Celery tasks: thin adapters from a message (a job id) to worker.runner."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, Task, shared_task, signals

from jobstore.broker import Broker
from jobstore.db import utcnow
from jobstore.queue import RUN_JOB_TASK, RUN_TRIAL_TASK, WEBHOOK_TASK
from jobstore.repositories import jobs as jobs_repo
from jobstore.repositories import webhook_deliveries, webhook_secrets
from jobstore.settings import Settings
from jobstore.webhooks.delivery import deliver, log_entry
from jobstore.webhooks.secrets import signing_secrets
from prunekit.spec.api import EventKind, WebhookState
from worker.context import WorkerContext, make_context
from worker.runner import DatabaseUnavailable, execute_job
from worker.sweeper import Sweeper

log = logging.getLogger(__name__)

# One context per process: database engines and clients must not cross a fork.
_contexts: dict[int, WorkerContext] = {}
_sweepers: list[Sweeper] = []


def _forget_parent_connections() -> None:
    # A forked pool child must not close (or reuse) the sockets its parent's engine holds.
    for ctx in _contexts.values():
        ctx.db.engine.dispose(close=False)
    _contexts.clear()


os.register_at_fork(after_in_child=_forget_parent_connections)


def context_for(app: Celery) -> WorkerContext:
    ctx = _contexts.get(os.getpid())
    if ctx is None:
        settings: Settings = app.prunekit_settings
        ctx = make_context(settings, Broker(settings, app=app))
        _contexts[os.getpid()] = ctx
    return ctx


@shared_task(name=RUN_JOB_TASK, bind=True)
def run_job_task(self: Task, job_id: str) -> str:
    """Run the job `job_id` (claims it first; a duplicate delivery is a no-op)."""
    try:
        outcome = execute_job(context_for(self.app), job_id)
    except DatabaseUnavailable as exc:
        log.warning("%s; retrying", exc)
        raise self.retry(exc=exc, countdown=min(60, 5 * 2**self.request.retries), max_retries=30) from exc
    log.info("job %s: %s", job_id, outcome)
    return outcome


@shared_task(name=RUN_TRIAL_TASK, bind=True)
def run_trial_task(self: Task, job_id: str) -> str:
    """Help run the trials of the sweep job `job_id` until none is left to claim (never finalizes it)."""
    from worker.sweeps import execute_trials

    outcome = execute_trials(context_for(self.app), job_id)
    log.info("sweep %s trials: %s", job_id, outcome)
    return outcome


@shared_task(name=WEBHOOK_TASK, bind=True, max_retries=None)
def deliver_webhook_task(self: Task, job_id: str) -> str:
    """POST a finished job's state to its webhook, retrying with exponential backoff."""
    ctx = context_for(self.app)
    with ctx.db.session() as s:
        job = jobs_repo.get_job_any(s, job_id)
        if job is None or not job.webhook_url:
            return "no_webhook"
        secrets = signing_secrets(ctx.settings, webhook_secrets.get(s, job.owner), utcnow())
    attempt = self.request.retries + 1
    started_at = utcnow()
    result = deliver(ctx.settings, job, secrets)
    with ctx.db.session() as s:
        webhook_deliveries.add(s, log_entry(job, attempt, result, started_at))
        if result.ok:
            jobs_repo.set_webhook_state(s, job_id, WebhookState.DELIVERED)
            jobs_repo.add_event(s, job_id, EventKind.LOG, f"webhook delivered ({result.detail})")
            return "delivered"
        give_up = not result.retryable or attempt >= ctx.settings.webhook_max_attempts
        jobs_repo.add_event(
            s,
            job_id,
            EventKind.LOG,
            f"webhook attempt {attempt} failed: {result.detail}" + ("; giving up" if give_up else ""),
        )
        if give_up:
            jobs_repo.set_webhook_state(s, job_id, WebhookState.FAILED)
            return "failed"
    countdown = ctx.settings.webhook_backoff_seconds * 2 ** (attempt - 1)
    raise self.retry(countdown=countdown, queue=job.queue)


@signals.worker_process_init.connect
def _preload_engine(**_: Any) -> None:
    # Import torch and the engine when the pool process starts, not when the first job arrives.
    try:
        import worker.engine.api  # noqa: F401
    except Exception:  # the job itself will report the import error with its traceback
        log.exception("could not preload the engine")


@signals.worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None or not hasattr(app, "prunekit_settings"):
        return
    sweeper = Sweeper(context_for(app))
    sweeper.start()
    _sweepers.append(sweeper)


@signals.worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    for sweeper in _sweepers:
        sweeper.stop()
