"""A per-process cache of job status bodies, kept fresh by PostgreSQL's job change notifications.

Every write to a job or its metadata sends ``NOTIFY prunekit_job_changed, '<job id>'`` (a trigger, migration 0007),
whichever process makes it. Each API event loop listens on a connection of its own and drops the job's cached body
when one arrives, so a poll sees a worker's change within the notification's delivery time (milliseconds). The
cache is trusted only while that connection is up: when it drops, everything cached is forgotten and reads go to
the database until it is listening again. Entries also expire after ``ttl`` seconds, which bounds how stale a body
can be should a notification ever be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url

__all__ = ["CHANNEL", "JobChangeListener", "LoopStatusCaches", "StatusCache"]

log = logging.getLogger(__name__)

CHANNEL = "prunekit_job_changed"


@dataclass(frozen=True)
class _Entry:
    owner: str
    body: bytes
    stored_at: float


class StatusCache:
    """Serialized Job bodies by job id, for its owner only; empty and bypassed while not `live`."""

    def __init__(self, ttl: float, max_bytes: int = 64 * 1024**2, clock: Callable[[], float] = time.monotonic) -> None:
        # Bounded by bytes, not entries: a job's body carries its spec, which a tenant controls (up to a form field).
        self.ttl, self.max_bytes, self._clock = ttl, max_bytes, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._generation = 0  # bumped by every invalidation: a read that started before one must not be stored
        self._lock = threading.Lock()  # the API's own writes invalidate from worker threads (sync routes)
        self.live = False

    def token(self) -> int:
        """Take before reading the database; `put` stores the result only if nothing changed meanwhile."""
        return self._generation

    def get(self, job_id: str, owner: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(job_id) if self.live else None
            if entry is None or entry.owner != owner:
                return None
            if self._clock() - entry.stored_at > self.ttl:
                self._drop(job_id)
                return None
            self._entries.move_to_end(job_id)
            return entry.body

    def put(self, job_id: str, owner: str, body: bytes, token: int) -> None:
        with self._lock:
            if not self.live or token != self._generation:
                return  # a change arrived while the body was being read: it may already be stale
            if len(body) > self.max_bytes:
                return
            self._drop(job_id)
            self._entries[job_id] = _Entry(owner, body, self._clock())
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))  # least recently used first

    def invalidate(self, job_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._drop(job_id)

    def set_live(self, live: bool) -> None:
        """Trust the cache (listening) or not (connection lost); either way, forget what was cached."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._bytes = 0
            self.live = live

    def _drop(self, job_id: str) -> None:
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            self._bytes -= len(entry.body)


def _conninfo(database_url: str) -> str:
    """libpq's form of a SQLAlchemy PostgreSQL URL (postgresql+psycopg://... -> postgresql://...)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class JobChangeListener:
    """LISTEN on a connection of its own and invalidate `cache` per notification; reconnect when it drops."""

    _MAX_RETRY_SECONDS = 30.0  # while the database is down, one warning (and one attempt) per this at most

    def __init__(self, database_url: str, cache: StatusCache, retry_seconds: float = 1.0) -> None:
        self._conninfo, self.cache, self.retry_seconds = _conninfo(database_url), cache, retry_seconds
        self._delay = retry_seconds

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:  # the cache is off until the next LISTEN is in place
                log.warning("job change listener lost its connection (%s); status reads go to the database", exc)
            finally:
                self.cache.set_live(False)
            await asyncio.sleep(self._delay)
            self._delay = min(2 * self._delay, self._MAX_RETRY_SECONDS)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self.cache.set_live(True)  # from here on every change reaches us
            self._delay = self.retry_seconds
            async for note in conn.notifies():
                self.cache.invalidate(note.payload)


class LoopStatusCaches:
    """One StatusCache and its listener per event loop (an asyncio connection belongs to the loop that opened it)."""

    def __init__(self, database_url: str, ttl: float, enabled: bool) -> None:
        self.database_url, self.ttl = database_url, ttl
        self.enabled = enabled and database_url.startswith("postgresql")
        self._running: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[StatusCache, asyncio.Task[None]]]
        self._running = weakref.WeakKeyDictionary()

    def start(self) -> None:
        """Start this loop's listener; its cache goes live once the LISTEN is in place. A no-op when disabled."""
        loop = asyncio.get_running_loop()
        if self.enabled and loop not in self._running:
            cache = StatusCache(self.ttl)
            task = loop.create_task(JobChangeListener(self.database_url, cache).run(), name="job-change-listener")
            self._running[loop] = (cache, task)

    def get(self) -> StatusCache | None:
        """This loop's cache when it can be trusted, else None (read the database)."""
        running = self._running.get(asyncio.get_running_loop())
        return running[0] if running is not None and running[0].live else None

    def invalidate(self, job_id: str) -> None:
        """Drop a job this process just changed from every loop's cache, before its notification comes back."""
        for cache, _ in list(self._running.values()):
            cache.invalidate(job_id)

    async def stop(self) -> None:
        running = self._running.pop(asyncio.get_running_loop(), None)
        if running is None:
            return
        cache, task = running
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        cache.set_live(False)
