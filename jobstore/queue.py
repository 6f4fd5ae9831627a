"""The Celery app factory, shared by the API (which only sends by task name) and the workers."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from jobstore.settings import Settings

RUN_JOB_TASK = "prunekit.run_job"
RUN_TRIAL_TASK = "prunekit.run_trial"
WEBHOOK_TASK = "prunekit.deliver_webhook"
QUEUES = ("cpu", "gpu")


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Transport options for the configured broker."""
    if settings.broker_is_filesystem:
        folder = settings.broker_dir.resolve()
        for sub in ("queue", "control", "processed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "polling_interval": 0.2,
        }
    opts: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if settings.broker_key_prefix:
        opts["global_keyprefix"] = settings.broker_key_prefix
    return opts


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from settings; the task module is only imported by workers."""
    app = Celery("prunekit", broker=settings.broker_url, include=["worker.tasks"], set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Job state of record lives in the database; Celery results are never read.
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_time_limit,
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_queues=[Queue(q, routing_key=q) for q in QUEUES],
        task_default_queue=settings.default_queue,
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        # A broker blip must not kill a running job: the database, not the ack, records its outcome, and a
        # message redelivered later finds the job finished and does nothing.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # The filesystem transport has no pub/sub worth using for remote control.
        worker_enable_remote_control=not settings.broker_is_filesystem,
        timezone="UTC",
        enable_utc=True,
    )
    app.prunekit_settings = settings
    return app
