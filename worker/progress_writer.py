"""The engine's progress, written to the job's row and events: throttled, and kept through database blips."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from jobstore.db import is_transient, utcnow
from jobstore.repositories import jobs as jobs_repo
from prunekit.spec.api import EventKind
from worker.context import WorkerContext
from worker.engine.progress import ProgressEvent
from worker.heartbeat import retry_transient
from worker.leases import LeaseKeeper

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    """Engine metrics may hold numpy scalars or NaN; the job store holds plain JSON."""
    try:
        data = json.loads(json.dumps(value, default=lambda o: float(o) if hasattr(o, "__float__") else str(o)))
    except (TypeError, ValueError):
        return {"repr": repr(value)[:2000]}

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(data)


class ProgressWriter:
    """The engine's progress sink: throttled writes to the job row, events, and the cancel check."""

    def __init__(self, ctx: WorkerContext, job_id: str, token: str, keeper: LeaseKeeper) -> None:
        self.ctx, self.job_id, self.token, self.keeper = ctx, job_id, token, keeper
        self._stage: str | None = None
        self._percent = 0.0
        self._events: list[dict[str, Any]] = []
        self._last_write = 0.0
        self._dirty = False

    def __call__(self, ev: ProgressEvent) -> None:
        self.keeper.raise_if_stopped()
        stage_changed = ev.stage != self._stage
        now = utcnow()
        if stage_changed:
            self._events.append(
                {
                    "kind": EventKind.PROGRESS,
                    "stage": ev.stage,
                    "percent": ev.percent,
                    "message": ev.message or ev.stage,
                }
            )
        elif ev.metrics:
            self._events.append(
                {
                    "kind": EventKind.METRIC,
                    "stage": ev.stage,
                    "percent": ev.percent,
                    "message": ev.message,
                    "data": _jsonable(ev.metrics),
                }
            )
        elif ev.message:
            self._events.append(
                {"kind": EventKind.LOG, "stage": ev.stage, "percent": ev.percent, "message": ev.message}
            )
        if stage_changed and ev.metrics:
            self._events[-1]["data"] = _jsonable(ev.metrics)
        for e in self._events:
            e.setdefault("ts", now)
        self._stage, self._percent, self._dirty = ev.stage, float(ev.percent), True
        if stage_changed or ev.metrics or time.monotonic() - self._last_write >= self.ctx.settings.progress_interval:
            self.flush()

    def flush(self) -> None:
        """Write pending progress; a transient database error keeps it for the next write (the engine runs on)."""
        try:
            self._write()
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            self._last_write = time.monotonic()
            log.warning("job %s: progress not written (%s); will retry", self.job_id, type(exc).__name__)

    def flush_final(self) -> None:
        """Write pending progress, retrying transient database errors while the lease lasts."""
        retry_transient(self._write, self.keeper.deadline(), f"job {self.job_id} progress")

    def _write(self) -> None:
        if not self._dirty and not self._events:
            return
        with self.ctx.db.session() as s:
            if not jobs_repo.set_progress(s, self.job_id, self.token, self._stage, self._percent, utcnow()):
                self.keeper.lost.set()
                return
            for e in self._events:
                jobs_repo.add_event(
                    s,
                    self.job_id,
                    e["kind"],
                    str(e.get("message") or "")[:4000],
                    stage=e.get("stage"),
                    percent=e.get("percent"),
                    data=e.get("data"),
                    ts=e["ts"],
                )
        self._events, self._dirty = [], False
        self._last_write = time.monotonic()
