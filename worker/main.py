"""The Celery app the worker command line loads: `celery -A worker.main worker -Q cpu -c 1`."""

from __future__ import annotations

from jobstore.queue import create_celery
from jobstore.settings import Settings

app = create_celery(Settings())
