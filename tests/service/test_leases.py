"""A job never runs twice at once; lost workers' jobs are requeued, canceled or failed (real DB)."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from jobstore.db import utcnow
from jobstore.repositories import jobs as repo
from service.core.state import AppState
from tests.service.conftest import submit
from worker.context import WorkerContext
from worker.runner import execute_job
from worker.sweeper import sweep_once

LEASE = timedelta(seconds=30)


def _ctx(state: AppState) -> WorkerContext:
    return WorkerContext(state.settings, state.db, state.storage, state.broker)


def _job(state: AppState, job_id: str):
    with state.db.session() as s:
        return repo.get_job_any(s, job_id)


def test_claim_is_exclusive_until_the_lease_expires(client: TestClient, state: AppState) -> None:
    job_id = submit(client)["id"]
    now = utcnow()
    with state.db.session() as s:
        assert repo.claim(s, job_id, "first", now, LEASE, 3)
    with state.db.session() as s:
        assert not repo.claim(s, job_id, "second", now, LEASE, 3)  # a redelivered message
    with state.db.session() as s:
        assert repo.claim(s, job_id, "third", now + LEASE + timedelta(seconds=1), LEASE, 3)  # the first died
    job = _job(state, job_id)
    assert job.attempts == 2 and job.lease_token == "third" and job.status == "running"
    with state.db.session() as s:
        # The first attempt, come back to life, can neither report progress nor finish the job.
        assert not repo.set_progress(s, job_id, "first", "prune", 50.0, now)
        assert not repo.finish(s, job_id, "first", "succeeded", now)
        assert repo.renew_lease(s, job_id, "first", now + LEASE) is None
        assert repo.finish(s, job_id, "third", "succeeded", now)
    with state.db.session() as s:
        assert not repo.claim(s, job_id, "fourth", now + 10 * LEASE, LEASE, 3)


def test_a_duplicate_delivery_does_not_run_a_live_job(client: TestClient, state: AppState) -> None:
    job_id = submit(client)["id"]
    with state.db.session() as s:
        assert repo.claim(s, job_id, "owner", utcnow(), LEASE, 3)
    assert execute_job(_ctx(state), job_id) == "busy"
    job = _job(state, job_id)
    assert job.attempts == 1 and job.lease_token == "owner"


def test_a_finished_job_is_not_run_again(client: TestClient, state: AppState) -> None:
    job_id = submit(client)["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert execute_job(_ctx(state), job_id) == "already_canceled"


def test_sweeper_requeues_a_lost_job_and_sends_it_again(client: TestClient, state: AppState) -> None:
    job_id = submit(client)["id"]
    past = utcnow() - 2 * LEASE
    with state.db.session() as s:
        assert repo.claim(s, job_id, "dead-worker", past, LEASE, 3)
    before = state.broker.queue_depths()["cpu"]
    counts = sweep_once(_ctx(state))
    assert counts["requeued"] == 1 and counts["sent"] == 1
    job = _job(state, job_id)
    assert job.status == "queued" and job.lease_token is None and job.attempts == 1
    assert state.broker.queue_depths()["cpu"] == before + 1
    assert sweep_once(_ctx(state))["sent"] == 0  # sent once, not on every pass
    events = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
    assert "requeued" in events[-1]["message"]


def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(client: TestClient, state: AppState) -> None:
    job_id = submit(client)["id"]
    t = utcnow() - 100 * LEASE
    for attempt in range(state.settings.max_attempts):
        with state.db.session() as s:
            assert repo.claim(s, job_id, f"crash-{attempt}", t, LEASE, state.settings.max_attempts)
        t += 2 * LEASE  # each attempt's worker dies and its lease runs out
        if attempt < state.settings.max_attempts - 1:
            with state.db.session() as s:
                assert repo.requeue_expired(s, job_id, f"crash-{attempt}", t)
    with state.db.session() as s:  # a redelivered message may not start a fourth attempt
        assert not repo.claim(s, job_id, "one-more", t, LEASE, state.settings.max_attempts)
    assert sweep_once(_ctx(state))["failed"] == 1
    body = client.get(f"/v1/jobs/{job_id}").json()
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost"
    assert body["attempts"] == state.settings.max_attempts
    assert "3 attempts" in body["error"]["message"]


def test_cancel_of_a_job_whose_worker_died(client: TestClient, state: AppState) -> None:
    job_id = submit(client)["id"]
    with state.db.session() as s:
        assert repo.claim(s, job_id, "dead", utcnow() - 2 * LEASE, LEASE, 3)
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "running"
    assert sweep_once(_ctx(state))["canceled"] == 1
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled"


def test_unsent_job_is_sent_by_the_sweeper(client: TestClient, state: AppState) -> None:
    job_id = submit(client)["id"]
    with state.db.session() as s:  # as if the broker had been down when the job was submitted
        repo.unmark_enqueued(s, job_id)
        s.execute(repo.update(repo.JobRecord).where(repo.JobRecord.id == job_id).values(updated_at=utcnow() - LEASE))
    assert sweep_once(_ctx(state))["sent"] == 1
