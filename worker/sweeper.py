"""Finds jobs whose worker vanished (lease expired) and requeues, cancels or fails them.

Runs as a thread in every worker's main process. Each action is a conditional update, so any
number of sweepers can run at once and exactly one wins per job. It also resends the messages
a broker lost (restarted without persistence, flushed) and removes crashed processes' leftovers.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from jobstore import lifecycle
from jobstore.db import utcnow
from jobstore.lifecycle import Recovery
from jobstore.repositories import jobs as jobs_repo
from jobstore.settings import Settings
from jobstore.storage.cleanup import clean_upload_parts, remove_expired_files, remove_stale_uploads
from prunekit.spec.api import EventKind
from worker.context import WorkerContext
from worker.leftovers import remove_stale_sandboxes, sandbox_max_age

log = logging.getLogger(__name__)

_COUNTED = {Recovery.REQUEUED: "requeued", Recovery.GAVE_UP: "failed", Recovery.CANCELED: "canceled"}
LEFTOVERS_EVERY = 600.0  # seconds between two looks for temp folders, partial uploads and expired files


def sweep_once(ctx: WorkerContext) -> dict[str, int]:
    """One pass; returns counts of what it did."""
    counts = {"requeued": 0, "failed": 0, "canceled": 0, "sent": 0, "resent": 0}
    now = utcnow()
    with ctx.db.session() as s:
        expired = jobs_repo.expired_leases(s, now)
    for info in expired:
        with ctx.db.session() as s:
            recovery = lifecycle.recover(s, info, now, ctx.settings.max_attempts, requeue=True)
            if recovery in (Recovery.CANCELED, Recovery.GAVE_UP):
                lifecycle.notify(s, ctx.broker, info.id)
        if recovery is not Recovery.NOTHING:
            counts[_COUNTED[recovery]] += 1
        if recovery is Recovery.REQUEUED:
            counts["sent"] += _send(ctx, info.id, info.queue)
    with ctx.db.session() as s:
        unsent = jobs_repo.unsent_jobs(s, now - timedelta(seconds=max(10.0, 2 * ctx.settings.sweep_interval)))
    for job_id, queue in unsent:
        counts["sent"] += _send(ctx, job_id, queue)
    counts["resent"] = _resend_lost(ctx, now)
    if any(counts.values()):
        log.info("sweep: %s", counts)
    return counts


def _send(ctx: WorkerContext, job_id: str, queue: str) -> int:
    # Send, then mark: two sweepers may both send (the claim makes the second message a no-op),
    # but a crash between the two steps can never leave a queued job without a message.
    try:
        ctx.broker.send_job(job_id, queue)
    except Exception:  # broker down: leave it unsent, the next pass tries again
        log.warning("could not send job %s", job_id, exc_info=True)
        return 0
    with ctx.db.session() as s:
        jobs_repo.mark_enqueued(s, job_id, utcnow())
    return 1


def _webhook_patience(settings: Settings) -> timedelta:
    """How long a pending webhook may show no activity while its retry chain is alive (longest backoff)."""
    backoff = min(settings.webhook_backoff_seconds * 2 ** (settings.webhook_max_attempts - 1), 86400.0)
    return timedelta(seconds=settings.requeue_stale_after + settings.webhook_timeout + backoff)


def _resend_lost(ctx: WorkerContext, now: datetime) -> int:
    """Resend stale queued jobs and pending webhooks, no more per queue than the broker is missing."""
    sent_before = now - timedelta(seconds=ctx.settings.requeue_stale_after)
    with ctx.db.session() as s:
        jobs = jobs_repo.stale_queued_jobs(s, sent_before)
        hooks = jobs_repo.stale_webhooks(s, now - _webhook_patience(ctx.settings))
        if not jobs and not hooks:
            return 0
        waiting = jobs_repo.waiting_messages(s)
    try:
        depths = ctx.broker.queue_depths()
    except Exception:  # broker down: nothing can be sent now, the next pass looks again
        log.warning("could not read the queue depths", exc_info=True)
        return 0
    # A backlog is not a loss: only as many messages as the queue lacks are sent again.
    missing = {q: n - depths.get(q, 0) for q, n in waiting.items()}
    resent = 0
    for job_id, queue in jobs:
        if missing.get(queue, 0) > 0 and _resend_job(ctx, job_id, queue, sent_before):
            missing[queue] -= 1
            resent += 1
    for job_id, queue in hooks:
        if missing.get(queue, 0) > 0 and _resend_webhook(ctx, job_id, queue):
            missing[queue] -= 1
            resent += 1
    return resent


def _resend_job(ctx: WorkerContext, job_id: str, queue: str, sent_before: datetime) -> bool:
    # Mark, then send: one sweeper wins the conditional update; a crash between the two leaves the
    # job stale again after requeue_stale_after, and a failed send hands it to the unsent path.
    with ctx.db.session() as s:
        if not jobs_repo.mark_resent(s, job_id, sent_before, utcnow()):
            return False
    try:
        ctx.broker.send_job(job_id, queue)
    except Exception:
        log.warning("could not resend job %s", job_id, exc_info=True)
        with ctx.db.session() as s:
            jobs_repo.unmark_enqueued(s, job_id)
        return False
    with ctx.db.session() as s:
        jobs_repo.add_event(s, job_id, EventKind.LOG, "sent again: the broker no longer held its message")
    log.warning("job %s was queued but its message was lost; sent it again", job_id)
    return True


def _resend_webhook(ctx: WorkerContext, job_id: str, queue: str) -> bool:
    # Webhooks are at least once (receivers dedupe by webhook-id): two sweepers may both resend.
    try:
        ctx.broker.send_webhook(job_id, queue)
    except Exception:
        log.warning("could not resend the webhook of job %s", job_id, exc_info=True)
        return False
    with ctx.db.session() as s:  # the event is also the mark: the webhook is not stale again for a while
        jobs_repo.add_event(s, job_id, EventKind.LOG, "webhook sent again: the broker no longer held its message")
    log.warning("the webhook of job %s was pending but its message was lost; sent it again", job_id)
    return True


def clean_leftovers(ctx: WorkerContext) -> dict[str, int]:
    """Remove this host's left-over sandbox folders and stale partial uploads; returns counts."""
    return {
        "sandboxes": remove_stale_sandboxes(sandbox_max_age(ctx.settings)),
        "parts": clean_upload_parts(ctx.settings),
    }


class Sweeper(threading.Thread):
    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name="prunekit-sweeper", daemon=True)
        self.ctx = ctx
        self._stop_evt = threading.Event()

    def run(self) -> None:
        last_cleanup = -LEFTOVERS_EVERY
        while True:
            try:
                sweep_once(self.ctx)
            except Exception:  # keep sweeping through database or broker outages
                log.warning("sweep failed", exc_info=True)
            if time.monotonic() - last_cleanup >= LEFTOVERS_EVERY:
                last_cleanup = time.monotonic()
                try:
                    clean_leftovers(self.ctx)
                except Exception:  # a disk problem must not stop the sweeper
                    log.warning("leftover cleanup failed", exc_info=True)
                try:
                    remove_expired_files(self.ctx.db, self.ctx.storage, self.ctx.settings.file_ttl_seconds)
                    # abandoned resumable uploads: their rows, staged parts and S3 multipart parts
                    remove_stale_uploads(self.ctx.db, self.ctx.storage, self.ctx.settings.upload_part_stale_after)
                except Exception:  # database or storage outage: the next cleanup tries again
                    log.warning("removing expired files or stale uploads failed", exc_info=True)
            if self._stop_evt.wait(self.ctx.settings.sweep_interval):
                return

    def stop(self) -> None:
        self._stop_evt.set()
