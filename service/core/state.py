"""What one app instance holds: settings, database, storage, keys, broker, metrics registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from service.core.auth import KeyRing
from service.core.broker import Broker
from service.core.config import Settings
from service.core.db import Database
from service.storage import Storage


@dataclass
class AppState:
    settings: Settings
    db: Database
    storage: Storage
    keys: KeyRing
    broker: Broker
    registry: CollectorRegistry
