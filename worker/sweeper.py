"""Finds jobs whose worker vanished (lease expired) and requeues, cancels or fails them.

Runs as a thread in every worker's main process. Each action is a conditional update, so any
number of sweepers can run at once and exactly one wins per job.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from service.core.db import utcnow
from service.jobs import repository as jobs_repo
from worker.runner import WorkerContext, _notify, give_up_message

log = logging.getLogger(__name__)


def sweep_once(ctx: WorkerContext) -> dict[str, int]:
    """One pass; returns counts of what it did."""
    counts = {"requeued": 0, "failed": 0, "canceled": 0, "sent": 0}
    now = utcnow()
    with ctx.db.session() as s:
        expired = jobs_repo.expired_leases(s, now)
    for info in expired:
        notify = False
        send = False
        with ctx.db.session() as s:
            if info.cancel_requested:
                if jobs_repo.cancel_unclaimable(s, info.id, now):
                    jobs_repo.add_event(s, info.id, "state", "canceled (its worker had stopped)")
                    counts["canceled"] += 1
                    notify = True
            elif info.attempts >= ctx.settings.max_attempts:
                msg = give_up_message(info.attempts)
                if jobs_repo.fail_unclaimable(s, info.id, now, "worker_lost", msg):
                    jobs_repo.add_event(s, info.id, "state", msg)
                    counts["failed"] += 1
                    notify = True
            elif jobs_repo.requeue_expired(s, info.id, info.lease_token, now):
                jobs_repo.add_event(
                    s, info.id, "state", f"requeued: the worker of attempt {info.attempts} stopped answering"
                )
                counts["requeued"] += 1
                send = True
        if notify:
            _notify(ctx, info.id)
        if send:
            counts["sent"] += _send(ctx, info.id, info.queue)
    with ctx.db.session() as s:
        unsent = jobs_repo.unsent_jobs(s, now - timedelta(seconds=max(10.0, 2 * ctx.settings.sweep_interval)))
    for job_id, queue in unsent:
        counts["sent"] += _send(ctx, job_id, queue)
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


class Sweeper(threading.Thread):
    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name="prunekit-sweeper", daemon=True)
        self.ctx = ctx
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while True:
            try:
                sweep_once(self.ctx)
            except Exception:  # keep sweeping through database or broker outages
                log.warning("sweep failed", exc_info=True)
            if self._stop_evt.wait(self.ctx.settings.sweep_interval):
                return

    def stop(self) -> None:
        self._stop_evt.set()
