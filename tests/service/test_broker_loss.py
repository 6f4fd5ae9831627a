"""A broker that loses its messages (restart without persistence, FLUSHALL) loses no job or webhook."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from jobstore.db import utcnow
from jobstore.models import JobEvent, JobRecord
from jobstore.repositories import jobs as repo
from service.core.state import AppState
from tests.service.conftest import submit
from worker.context import WorkerContext
from worker.runner import execute_job
from worker.sweeper import sweep_once

LONG_AGO = timedelta(minutes=30)  # beyond the default requeue_stale_after and webhook patience


def _ctx(state: AppState) -> WorkerContext:
    return WorkerContext(state.settings, state.db, state.storage, state.broker)


def _lose_messages(state: AppState) -> None:
    """What a broker restarted without its data does: every queued message is gone."""
    with state.broker.app.connection_for_write() as conn:
        conn.default_channel.queue_purge("cpu")


def _age(state: AppState, job_id: str) -> None:
    """Move the job's send time, last update and events LONG_AGO into the past."""
    past = utcnow() - LONG_AGO
    with state.db.session() as s:
        s.execute(update(JobRecord).where(JobRecord.id == job_id).values(enqueued_at=past, updated_at=past))
        s.execute(update(JobEvent).where(JobEvent.job_id == job_id).values(ts=past))


def _depth(state: AppState) -> int:
    return state.broker.queue_depths()["cpu"]


def test_a_queued_job_whose_message_was_lost_is_sent_again_once(client: TestClient, state: AppState) -> None:
    job_id = submit(client)["id"]
    _lose_messages(state)
    _age(state, job_id)
    assert _depth(state) == 0
    sweep_once(_ctx(state))
    assert _depth(state) == 1
    with state.db.session() as s:
        job = repo.get_job_any(s, job_id)
        assert job is not None and job.status == "queued"
        assert job.enqueued_at is not None and job.enqueued_at > utcnow() - timedelta(minutes=1)
    sweep_once(_ctx(state))  # sent again once, not on every pass
    assert _depth(state) == 1
    events = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
    assert "sent again" in events[-1]["message"]


def test_a_backlogged_job_whose_message_is_still_queued_is_not_duplicated(client: TestClient, state: AppState) -> None:
    first, second = submit(client)["id"], submit(client)["id"]
    _age(state, first)
    _age(state, second)
    assert _depth(state) == 2
    assert sweep_once(_ctx(state))["resent"] == 0
    assert _depth(state) == 2


def test_the_original_and_the_resent_message_cannot_run_a_job_twice(client: TestClient, state: AppState) -> None:
    job_id = submit(client)["id"]
    _lose_messages(state)
    _age(state, job_id)
    assert sweep_once(_ctx(state))["resent"] == 1
    state.broker.send_job(job_id, "cpu")  # the "lost" message turns up after all (e.g. a delayed redelivery)
    with state.db.session() as s:  # one message's worker claims the job...
        assert repo.claim(s, job_id, "first-message", utcnow(), timedelta(seconds=30), 3)
    assert execute_job(_ctx(state), job_id) == "busy"  # ...the other finds its live lease and runs nothing
    with state.db.session() as s:
        assert repo.finish(s, job_id, "first-message", "succeeded", utcnow())
    assert execute_job(_ctx(state), job_id) == "already_succeeded"
    with state.db.session() as s:
        job = repo.get_job_any(s, job_id)
        assert job is not None and job.attempts == 1 and job.status == "succeeded"


def test_a_pending_webhook_whose_message_was_lost_is_sent_again_once(client: TestClient, state: AppState) -> None:
    job_id = submit(client, webhook_url="https://hooks.example.com/x")["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")  # terminal: its webhook message is queued
    _lose_messages(state)
    _age(state, job_id)
    counts = sweep_once(_ctx(state))
    assert counts["resent"] == 1 and _depth(state) == 1
    with state.db.session() as s:
        job = repo.get_job_any(s, job_id)
        assert job is not None and job.webhook_state == "pending"
    assert sweep_once(_ctx(state))["resent"] == 0
    assert _depth(state) == 1
    events = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
    assert "webhook" in events[-1]["message"] and "sent again" in events[-1]["message"]


def test_a_pending_webhook_still_retrying_is_not_resent(client: TestClient, state: AppState) -> None:
    job_id = submit(client, webhook_url="https://hooks.example.com/x")["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    _lose_messages(state)  # e.g. its retry waits in a worker's memory for its countdown
    assert sweep_once(_ctx(state))["resent"] == 0  # its last attempt is recent
    assert _depth(state) == 0
