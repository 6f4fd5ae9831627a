"""A background thread that renews a lease on a fixed beat, independently of the engine's pace."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from jobstore.db import is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")


def retry_transient(fn: Callable[[], T], deadline: float, what: str) -> T:
    """Call `fn` until it passes, retrying transient database errors until time.monotonic() > deadline."""
    pause = 0.1
    while True:
        try:
            return fn()
        except SQLAlchemyError as exc:
            if not is_transient(exc) or time.monotonic() + pause > deadline:
                raise
            log.warning("%s: transient database error, retrying in %.1f s: %s", what, pause, type(exc).__name__)
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


class Heartbeat(threading.Thread):
    """Calls `beat` every `interval` seconds until it returns False or `stop` is called."""

    def __init__(self, name: str, interval: float) -> None:
        super().__init__(name=name, daemon=True)
        self._interval = interval
        self._stop_evt = threading.Event()

    def beat(self) -> bool:
        """One renewal; False ends the thread (the lease is gone or the work should stop)."""
        raise NotImplementedError

    def run(self) -> None:
        while not self._stop_evt.wait(self._interval):
            try:
                go_on = self.beat()
            except Exception as exc:  # a database blip: keep trying until the lease really runs out
                if is_transient(exc):
                    log.warning("%s: could not renew the lease (%s); retrying", self.name, type(exc).__name__)
                else:
                    log.exception("%s: could not renew the lease", self.name)
                continue
            if not go_on:
                return

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=5)
