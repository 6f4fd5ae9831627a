"""What a worker process holds for its tasks: settings, database, storage and the broker."""

from __future__ import annotations

from dataclasses import dataclass

from jobstore.broker import Broker
from jobstore.db import Database
from jobstore.settings import Settings
from jobstore.storage import Storage, make_storage


@dataclass
class WorkerContext:
    settings: Settings
    db: Database
    storage: Storage
    broker: Broker


def make_context(settings: Settings, broker: Broker) -> WorkerContext:
    """A context with its own database engine and storage client (make one per process, after a fork)."""
    return WorkerContext(settings, Database(settings.database_url), make_storage(settings), broker)
