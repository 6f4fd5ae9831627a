"""The worker's progress sink and lease keeper against a real database (no engine needed)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from jobstore.db import utcnow
from jobstore.repositories import jobs as repo
from service.core.state import AppState
from tests.service.conftest import submit
from worker.context import WorkerContext
from worker.engine.errors import JobCanceledError
from worker.engine.progress import ProgressEvent
from worker.leases import LeaseKeeper, LeaseLost
from worker.progress_writer import ProgressWriter


def _running(client: TestClient, state: AppState, settings_update: dict | None = None) -> tuple[str, WorkerContext]:
    job_id = submit(client)["id"]
    with state.db.session() as s:
        assert repo.claim(s, job_id, "tok", utcnow(), timedelta(seconds=30), 3)
    settings = state.settings.model_copy(update=settings_update or {})
    return job_id, WorkerContext(settings, state.db, state.storage, state.broker)


def test_progress_is_throttled_and_events_recorded(client: TestClient, state: AppState) -> None:
    job_id, ctx = _running(client, state, {"progress_interval": 60})
    writer = ProgressWriter(ctx, job_id, "tok", LeaseKeeper(ctx, job_id, "tok"))
    writer(ProgressEvent("load", 0.0))
    writer(ProgressEvent("finetune", 10.0))
    for i in range(50):  # percent-only updates within the interval are not written one by one
        writer(ProgressEvent("finetune", 10.0 + i * 0.1))
    assert client.get(f"/v1/jobs/{job_id}").json()["percent"] == 10.0
    writer(ProgressEvent("finetune", 30.0, "epoch 1", {"epoch": 1, "val_accuracy": 0.9, "nan": float("nan")}))
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["stage"], job["percent"]) == ("finetune", 30.0)
    events = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
    assert [(e["kind"], e["stage"]) for e in events[1:]] == [
        ("progress", "load"), ("progress", "finetune"), ("metric", "finetune"),
    ]  # fmt: skip
    assert events[-1]["data"] == {"epoch": 1, "val_accuracy": 0.9, "nan": None}


def test_cancel_and_lost_lease_stop_the_engine(client: TestClient, state: AppState) -> None:
    job_id, ctx = _running(client, state, {"heartbeat_seconds": 0.05})
    keeper = LeaseKeeper(ctx, job_id, "tok")
    writer = ProgressWriter(ctx, job_id, "tok", keeper)
    keeper.start()
    try:
        writer(ProgressEvent("finetune", 40.0))
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        deadline = time.monotonic() + 5
        while not keeper.cancel_requested.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(JobCanceledError):
            writer(ProgressEvent("finetune", 41.0))
    finally:
        keeper.stop()

    other_id, ctx = _running(client, state, {"heartbeat_seconds": 0.05})
    keeper = LeaseKeeper(ctx, other_id, "tok")
    keeper.start()
    try:
        with state.db.session() as s:  # a sweeper presumed us dead and requeued the job
            assert repo.requeue_expired(s, other_id, "tok", utcnow() + timedelta(seconds=60))
        deadline = time.monotonic() + 5
        while not keeper.lost.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(LeaseLost):
            ProgressWriter(ctx, other_id, "tok", keeper)(ProgressEvent("finetune", 50.0))
    finally:
        keeper.stop()
