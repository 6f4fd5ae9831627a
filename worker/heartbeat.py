"""A background thread that renews a lease on a fixed beat, independently of the engine's pace."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


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
            except Exception:  # a database blip: keep trying until the lease really runs out
                log.warning("%s: could not renew the lease", self.name, exc_info=True)
                continue
            if not go_on:
                return

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=5)
