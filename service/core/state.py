"""What one app instance holds: settings, database, storage, keys, broker, metrics registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from jobstore.broker import Broker
from jobstore.db import Database
from jobstore.job_changes import LoopStatusCaches
from jobstore.settings import Settings
from jobstore.storage import Storage
from service.core.auth import KeyRing


@dataclass
class AppState:
    settings: Settings
    db: Database
    storage: Storage
    keys: KeyRing
    broker: Broker
    registry: CollectorRegistry
    status_caches: LoopStatusCaches
