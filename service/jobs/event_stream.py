"""Live job events as Server-Sent Events: `id: <seq>`, `event: <kind>`, `data: <Event JSON>` frames, in order.

The stream polls the job store from a worker thread with a short session per poll (no connection is held
while idle), sends a keep-alive comment when nothing happened for a while, and ends with an `end` frame once
the job is terminal and every event written up to then has been sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from anyio import to_thread
from fastapi.responses import StreamingResponse

from jobstore.db import Database
from jobstore.repositories import jobs as repository
from jobstore.views import event_view
from prunekit.spec.api import TERMINAL_STATUSES, Event, JobStatus

MEDIA_TYPE = "text/event-stream"
END_EVENT = "end"
_BATCH = 500
RETRY_MS = 2000  # how long an EventSource waits before it reconnects


@dataclass(frozen=True)
class Poll:
    events: list[Event]
    status: JobStatus | None  # None once the job is gone (deleted)


def wants_stream(accept: str | None) -> bool:
    """Whether the Accept header asks for an event stream."""
    return accept is not None and MEDIA_TYPE in accept.lower()


def frame(event: Event) -> str:
    """One event as an SSE frame (the JSON is a single line, so one data field)."""
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"


def end_frame(job_id: str, status: JobStatus | None) -> str:
    body = json.dumps({"job_id": job_id, "status": status.value if status else None})
    return f"event: {END_EVENT}\ndata: {body}\n\n"


def poll(db: Database, job_id: str, after: int) -> Poll:
    """The job's status, then its events after `after`: read in that order, so a terminal status means every
    event committed with (or before) the job's end is in this batch or the next."""
    with db.sessionmaker() as session:
        job = repository.get_job_any(session, job_id)
        status = job.status if job is not None else None
        rows = repository.list_events(session, job_id, after, _BATCH)
        return Poll([event_view(e) for e in rows], status)


async def frames(db: Database, job_id: str, after: int, interval: float, keepalive: float) -> AsyncIterator[str]:
    """The stream's text, from the first event after `after` to the end frame."""
    yield f"retry: {RETRY_MS}\n\n"
    last_sent = time.monotonic()
    while True:
        batch = await to_thread.run_sync(poll, db, job_id, after)
        for event in batch.events:
            yield frame(event)
            after = event.seq
        if batch.events:
            last_sent = time.monotonic()
        if len(batch.events) == _BATCH:
            continue  # more are waiting: no pause, and not the end yet
        if batch.status is None or batch.status in TERMINAL_STATUSES:
            yield end_frame(job_id, batch.status)
            return
        if time.monotonic() - last_sent >= keepalive:
            yield ": keep-alive\n\n"  # a comment: keeps proxies and the client's read timeout from closing it
            last_sent = time.monotonic()
        await anyio.sleep(interval)


def response(db: Database, job_id: str, after: int, interval: float, keepalive: float) -> StreamingResponse:
    """The streaming response; proxies are asked not to buffer it."""
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames(db, job_id, after, interval, keepalive), media_type=MEDIA_TYPE, headers=headers)
