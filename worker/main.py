"""The Celery app the worker command line loads: `celery -A worker.main worker -Q cpu -c 1`."""

from __future__ import annotations

from service.core.config import Settings
from worker.celery_app import create_celery

app = create_celery(Settings())
