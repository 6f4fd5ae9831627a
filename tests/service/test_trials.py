"""Sweep trials: exactly one worker claims each trial; dead workers' trials are reclaimed (real DB)."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from jobstore.db import utcnow
from jobstore.repositories import jobs as repo
from jobstore.repositories import trials as trials
from service.core.state import AppState
from tests.service.conftest import submit

LEASE = timedelta(seconds=30)


def test_trials_are_claimed_once_and_reclaimed_after_their_lease(client: TestClient, state: AppState) -> None:
    job_id = submit(client)["id"]
    now = utcnow()
    with state.db.session() as s:
        trials.create_trials(s, job_id, ["a", "b"], now)
        trials.create_trials(s, job_id, ["a", "b"], now)  # a redelivered job message: nothing new
    with state.db.session() as s:
        assert len(trials.list_trials(s, job_id)) == 2
        first = trials.claim_next(s, job_id, "t1", "w1:1", now, LEASE, 3)
        second = trials.claim_next(s, job_id, "t2", "w2:2", now, LEASE, 3)
        assert first is not None and second is not None and (first.idx, second.idx) == (0, 1)
        assert trials.claim_next(s, job_id, "t3", "w3:3", now, LEASE, 3) is None
        assert trials.finish(s, job_id, 0, "t1", "done", now, result_key="jobs/x/trials/000/")
    later = now + LEASE + timedelta(seconds=1)
    with state.db.session() as s:
        # w2 died: its trial is claimable again, and w2 can no longer finish or renew it.
        again = trials.claim_next(s, job_id, "t4", "w3:3", later, LEASE, 3)
        assert again is not None and again.idx == 1 and again.attempts == 2 and again.worker == "w3:3"
        assert not trials.renew(s, job_id, 1, "t2", later + LEASE)
        assert not trials.finish(s, job_id, 1, "t2", "done", later)
        assert trials.release(s, job_id, 1, "t4", later)
    with state.db.session() as s:
        rows = trials.list_trials(s, job_id)
        assert [(r.status, r.attempts) for r in rows] == [("done", 1), ("pending", 1)]
        assert trials.fail_exhausted(s, job_id, later, 1, "gone") == 1
        assert [r.status for r in trials.list_trials(s, job_id)] == ["done", "failed"]
        job = repo.get_job_any(s, job_id)
        assert job is not None
        repo.delete_job(s, job)
    with state.db.session() as s:
        assert trials.list_trials(s, job_id) == []
