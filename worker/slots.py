"""The job slots of this Celery worker (its concurrency), and so the CPU threads each job's sandbox gets."""

from __future__ import annotations

from typing import Any

from celery import signals

from jobstore.settings import Settings
from worker.engine.threads import default_threads

_slots = {"jobs": 1}


@signals.worker_init.connect
def remember_concurrency(sender: Any = None, **_: Any) -> None:
    """Keep the worker's `-c` (sent before the pool forks, so every pool process inherits it)."""
    concurrency = getattr(sender, "concurrency", None)
    if isinstance(concurrency, int) and concurrency > 0:
        _slots["jobs"] = concurrency


def job_threads(settings: Settings) -> int:
    """PRUNEKIT_WORKER_THREADS, else the available cores (less one) shared by this worker's job slots."""
    if settings.worker_threads is not None:
        return settings.worker_threads
    return default_threads(_slots["jobs"])
