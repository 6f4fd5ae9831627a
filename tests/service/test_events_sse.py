"""Live job events over SSE, through a real uvicorn server and a real HTTP client: in order, resumable, ending
when the job ends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from jobstore import lifecycle
from jobstore.db import utcnow
from jobstore.repositories import jobs as jobs_repo
from jobstore.settings import Settings
from prunekit.spec.api import EventKind, JobStatus
from service.core.state import AppState
from tests.service.conftest import KEY_A, KEY_B, SPEC
from tests.service.support import free_port, wait_for

SSE = {"Accept": "text/event-stream"}


@pytest.fixture()
def settings(settings: Settings) -> Settings:
    # Quick polls and keep-alives, so the tests see both within a second.
    return settings.model_copy(update={"events_poll_interval": 0.05, "events_keepalive": 0.3})


@pytest.fixture()
def base_url(app: FastAPI) -> Iterator[str]:
    """The app served by uvicorn on a free port, in a thread of this process (so tests can drive the job)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture()
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=10) as c:
        yield c


def _submit(http: httpx.Client) -> str:
    model = http.post("/v1/files", files={"file": ("m.pt", b"model")}, data={"kind": "model"}).json()
    r = http.post("/v1/jobs", json={"spec": SPEC, "model_file_id": model["id"]})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def _frames(lines: Iterator[str], within: float = 20) -> Iterator[dict[str, Any]]:
    """SSE frames as dicts of their fields (comments under ':'), parsed independently of the prunekit client.

    Keep-alives reset the client's read timeout, so a stream that never ends fails here after `within` seconds.
    """
    deadline = time.monotonic() + within
    frame: dict[str, Any] = {}
    for line in lines:
        assert time.monotonic() < deadline, "the event stream did not end"
        if line == "":
            if frame:
                yield frame
            frame = {}
            continue
        name, _, value = line.partition(":")
        frame[name or ":"] = value.removeprefix(" ")


def _run_job(state: AppState, job_id: str, stream_open: threading.Event) -> None:
    """What a worker writes, started only once the stream is open: so every event below arrives live."""
    assert stream_open.wait(10)
    token = "t-sse"
    with state.db.session() as s:
        assert lifecycle.claim(s, job_id, token, utcnow(), timedelta(seconds=30), 3) is not None
    for i, stage in enumerate(["load", "prune", "finetune"]):
        with state.db.session() as s:
            jobs_repo.add_event(s, job_id, EventKind.PROGRESS, stage, stage=stage, percent=30.0 * i)
    with state.db.session() as s:
        assert lifecycle.finish(s, job_id, token, JobStatus.FAILED, utcnow(), "failed: engine_error") is not None


def test_sse_delivers_events_in_order_and_ends_with_the_job(http: httpx.Client, state: AppState) -> None:
    job_id = _submit(http)
    stream_open = threading.Event()
    driver = threading.Thread(target=_run_job, args=(state, job_id, stream_open), daemon=True)
    driver.start()
    got: list[dict[str, Any]] = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=SSE) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for frame in _frames(r.iter_lines()):
            got.append(frame)
            if frame.get("event") == "state":
                stream_open.set()  # the "queued" event came: now the job runs
    # The loop ended because the server closed the stream, after the job had ended.
    driver.join(timeout=10)
    events = [f for f in got if "id" in f]
    assert [json.loads(f["data"])["seq"] for f in events] == [int(f["id"]) for f in events]
    seqs = [int(f["id"]) for f in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    messages = [json.loads(f["data"])["message"] for f in events]
    assert messages[0] == "queued" and messages[-1] == "failed: engine_error"
    assert messages[2:5] == ["load", "prune", "finetune"]
    assert [f["event"] for f in events][2:5] == ["progress"] * 3
    assert got[-1]["event"] == "end" and json.loads(got[-1]["data"]) == {"job_id": job_id, "status": "failed"}
    # The JSON list holds the same events.
    listed = http.get(f"/v1/jobs/{job_id}/events").json()
    assert [e["seq"] for e in listed["items"]] == seqs


def test_last_event_id_resumes_after_that_event(http: httpx.Client, state: AppState) -> None:
    job_id = _submit(http)
    assert http.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    all_seqs = [e["seq"] for e in http.get(f"/v1/jobs/{job_id}/events").json()["items"]]
    assert len(all_seqs) == 2  # queued, canceled
    for headers, params in (({"Last-Event-ID": str(all_seqs[0])}, {}), ({}, {"after": all_seqs[0]})):
        with http.stream("GET", f"/v1/jobs/{job_id}/events", headers={**SSE, **headers}, params=params) as r:
            frames = list(_frames(r.iter_lines()))
        assert [int(f["id"]) for f in frames if "id" in f] == all_seqs[1:]
        assert frames[-1]["event"] == "end"


def test_idle_stream_sends_keepalives_then_ends_on_cancel(http: httpx.Client, state: AppState) -> None:
    job_id = _submit(http)
    seen: list[dict[str, Any]] = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=SSE) as r:
        for frame in _frames(r.iter_lines()):
            seen.append(frame)
            if ":" in frame and not any(":" in f for f in seen[:-1]):
                # Idle while queued: a keep-alive came. Cancel from another connection; the stream must end.
                with httpx.Client(base_url=str(http.base_url), headers=dict(http.headers), timeout=10) as other:
                    assert other.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    assert any(":" in f for f in seen), seen
    assert seen[-1]["event"] == "end" and json.loads(seen[-1]["data"])["status"] == "canceled"


def test_json_list_has_the_list_shape_and_sse_checks_access(http: httpx.Client, base_url: str) -> None:
    job_id = _submit(http)
    http.post(f"/v1/jobs/{job_id}/cancel")
    first = http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1}).json()
    assert len(first["items"]) == 1 and first["next_cursor"] and first["next_after"] == first["items"][0]["seq"]
    rest = http.get(f"/v1/jobs/{job_id}/events", params={"cursor": first["next_cursor"]}).json()
    assert [e["message"] for e in rest["items"]] == ["canceled before it started"] and rest["next_cursor"] is None
    bad = http.get(f"/v1/jobs/{job_id}/events", headers={**SSE, "Last-Event-ID": "x1"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY_B}"}) as bob:
        assert bob.get(f"/v1/jobs/{job_id}/events", headers=SSE).status_code == 404
