"""Sending work to the workers by task name (the API never imports the engine)."""

from __future__ import annotations

import logging

from celery import Celery

from jobstore.queue import QUEUES, RUN_JOB_TASK, RUN_TRIAL_TASK, WEBHOOK_TASK, create_celery
from jobstore.settings import Settings

log = logging.getLogger(__name__)


class Broker:
    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or create_celery(settings)

    def send_job(self, job_id: str, queue: str) -> None:
        self.app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, routing_key=queue)

    def send_trial(self, job_id: str, queue: str) -> None:
        """Ask any worker on `queue` to help with the trials of the sweep job `job_id`."""
        self.app.send_task(RUN_TRIAL_TASK, args=[job_id], queue=queue, routing_key=queue)

    def send_webhook(self, job_id: str, queue: str) -> None:
        self.app.send_task(WEBHOOK_TASK, args=[job_id], queue=queue, routing_key=queue)

    def ping(self) -> bool:
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
                if not self.settings.broker_is_filesystem:
                    # ensure_connection alone may only open a socket; a round trip proves Redis answers.
                    conn.default_channel.client.ping()
            return True
        except Exception:  # readiness probe: any failure means "not ready"
            log.warning("broker not reachable", exc_info=True)
            return False

    def queue_depths(self) -> dict[str, int]:
        depths: dict[str, int] = {}
        with self.app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            for q in QUEUES:
                try:
                    depths[q] = int(channel.queue_declare(queue=q, passive=True).message_count)
                except Exception:  # a queue that does not exist yet has no messages
                    depths[q] = 0
        return depths

    def close(self) -> None:
        self.app.close()
