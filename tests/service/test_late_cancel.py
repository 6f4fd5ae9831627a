"""A cancel the API accepts (202) is honoured: the worker's finishing UPDATE records `canceled` (real DB)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from jobstore.db import utcnow
from jobstore.repositories import jobs as repo
from service.core.errors import InvalidState
from service.core.state import AppState
from service.jobs import service
from tests.service.conftest import submit

LEASE = timedelta(seconds=30)
RESULT: dict[str, Any] = {
    "artifact_key": "jobs/x/a1/model.pt",
    "artifact_name": "model.pt",
    "report_key": "jobs/x/a1/report.json",
    "gate_status": "passed",
    "gates": [{"name": "accuracy", "value": 0.9, "threshold": 0.8, "comparison": ">=", "passed": True, "reason": ""}],
    "percent": 100.0,
}


def _claimed(client: TestClient, state: AppState, token: str = "w1") -> str:
    job_id: str = submit(client)["id"]
    with state.db.session() as s:
        assert repo.claim(s, job_id, token, utcnow(), LEASE, 3)
    return job_id


def _finish(state: AppState, job_id: str, token: str = "w1") -> str | None:
    with state.db.session() as s:
        return repo.finish(s, job_id, token, "succeeded", utcnow(), **RESULT)


def test_a_cancel_accepted_before_the_finish_ends_canceled(client: TestClient, state: AppState) -> None:
    job_id = _claimed(client, state)
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "running"
    assert _finish(state, job_id) == "canceled"  # the worker learns its result was discarded
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled" and job["finished_at"]
    with state.db.session() as s:
        row = repo.get_job_any(s, job_id)
        assert row is not None and row.artifact_key is None and row.report_key is None and row.lease_token is None


def test_a_cancel_after_the_finish_is_refused(client: TestClient, state: AppState) -> None:
    job_id = _claimed(client, state)
    assert _finish(state, job_id) == "succeeded"
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409 and r.json()["code"] == "invalid_state"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"


def test_a_finish_without_cancel_keeps_its_values(client: TestClient, state: AppState) -> None:
    job_id = _claimed(client, state)
    assert _finish(state, job_id) == "succeeded"
    with state.db.session() as s:
        row = repo.get_job_any(s, job_id)
        assert row is not None and row.artifact_key == RESULT["artifact_key"] and row.gates == RESULT["gates"]


def _cancel(state: AppState, job_id: str) -> str:
    """The API's cancel: "accepted" (a 202) or "refused" (a 409)."""
    with state.db.sessionmaker() as s:
        job = repo.get_job_any(s, job_id)
        assert job is not None
        try:
            service.cancel_job(s, state.broker, job)
        except InvalidState:
            return "refused"
    return "accepted"


def _race(state: AppState, job_id: str, token: str) -> dict[str, Any]:
    """The worker's finish and the API's cancel, started at the same moment."""
    start = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def worker() -> None:
        start.wait()
        answers["finish"] = _finish(state, job_id, token)

    t = threading.Thread(target=worker)
    t.start()
    start.wait()
    answers["cancel"] = _cancel(state, job_id)
    t.join(timeout=30)
    return answers


def test_a_cancel_racing_the_finish_is_never_accepted_and_ignored(client: TestClient, state: AppState) -> None:
    for i in range(8):
        job_id = _claimed(client, state, token=f"w{i}")
        answers = _race(state, job_id, f"w{i}")
        final = client.get(f"/v1/jobs/{job_id}").json()["status"]
        assert final == answers["finish"], answers
        assert final == ("canceled" if answers["cancel"] == "accepted" else "succeeded"), answers
