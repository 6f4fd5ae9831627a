"""A worker rides out a dropped database connection, and never shows a database error to users (real DB)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, InvalidRequestError, OperationalError, ProgrammingError
from sqlalchemy.pool import Pool

from jobstore.db import is_transient, utcnow
from jobstore.models import JobRecord
from jobstore.repositories import jobs as repo
from service.core.state import AppState
from tests.service.conftest import submit
from worker import runner
from worker.context import WorkerContext
from worker.engine.progress import ProgressEvent
from worker.finishing import end_job
from worker.leases import LeaseKeeper
from worker.outcomes import internal_error_message
from worker.progress_writer import ProgressWriter

LEASE = timedelta(seconds=30)


def _ctx(state: AppState) -> WorkerContext:
    return WorkerContext(state.settings, state.db, state.storage, state.broker)


def _dropped(token: str = "t") -> OperationalError:
    return OperationalError(
        "UPDATE jobs SET stage=%(stage)s WHERE jobs.lease_token = %(token)s", {"token": token}, Exception("terminated")
    )


@contextmanager
def _server_ending_connections() -> Iterator[None]:
    """Every connection the pools check out is found closed by the server, as while backends are being terminated."""

    def closed(*_: object) -> None:
        raise DisconnectionError("the database server closed this connection")

    event.listen(Pool, "checkout", closed)
    try:
        yield
    finally:
        event.remove(Pool, "checkout", closed)


def _claimed(client: TestClient, state: AppState, token: str = "w1") -> tuple[str, LeaseKeeper]:
    job_id: str = submit(client)["id"]
    with state.db.session() as s:
        assert repo.claim(s, job_id, token, utcnow(), LEASE, 3)
    return job_id, LeaseKeeper(_ctx(state), job_id, token)


def _row(state: AppState, job_id: str) -> JobRecord:
    with state.db.session() as s:
        row = repo.get_job_any(s, job_id)
    assert row is not None
    return row


def _messages(client: TestClient, job_id: str) -> list[str]:
    return [e["message"] for e in client.get(f"/v1/jobs/{job_id}/events").json()["items"]]


def test_which_database_errors_are_transient() -> None:
    assert is_transient(_dropped())
    assert is_transient(DBAPIError("SELECT 1", {}, Exception("x"), connection_invalidated=True))
    assert not is_transient(ProgrammingError("SELECT nope", {}, Exception("syntax error")))
    assert not is_transient(ValueError("not a database error"))


def test_a_checkout_that_finds_every_connection_closed_is_transient(state: AppState) -> None:
    with _server_ending_connections(), pytest.raises(InvalidRequestError) as raised, state.db.session() as s:
        s.execute(text("SELECT 1"))
    assert is_transient(raised.value)  # SQLAlchemy's bare "This connection is closed", not a DBAPIError
    assert not is_transient(InvalidRequestError("This session is in 'prepared' state"))


def test_progress_outlives_a_checkout_that_finds_every_connection_closed(client: TestClient, state: AppState) -> None:
    job_id, keeper = _claimed(client, state)
    writer = ProgressWriter(_ctx(state), job_id, "w1", keeper)
    with _server_ending_connections():
        writer(ProgressEvent("finetune", 30.0, "finetuning"))  # not written, and the engine is not stopped
    writer.flush_final()
    assert not keeper.lost.is_set() and _row(state, job_id).stage == "finetune"


def test_the_api_answers_503_while_the_database_is_unreachable(client: TestClient, state: AppState) -> None:
    job_id: str = submit(client)["id"]
    with _server_ending_connections():
        down = client.get(f"/v1/jobs/{job_id}")
        listing = client.get("/v1/jobs")
    for r in (down, listing):
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "database_unavailable"
        assert "SELECT" not in r.text and "connection is closed" not in r.text
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200


def test_an_internal_error_shows_neither_sql_nor_the_lease_token(
    client: TestClient, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id: str = submit(client)["id"]
    seen: dict[str, str] = {}

    def broken(ctx: Any, job: JobRecord, folder: Path) -> Any:
        seen["token"] = str(job.lease_token)
        raise ProgrammingError(f"SELECT * FROM files WHERE lease_token = '{job.lease_token}'", {}, Exception("boom"))

    monkeypatch.setattr(runner, "download_inputs", broken)
    assert runner.execute_job(_ctx(state), job_id) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "internal_error"
    assert job["error"]["message"] == internal_error_message(job_id)
    shown = job["error"]["message"] + " ".join(_messages(client, job_id))
    assert seen["token"] not in shown and "SELECT" not in shown and "lease_token" not in shown


def test_progress_outlives_a_dropped_connection(
    client: TestClient, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, keeper = _claimed(client, state)
    writer = ProgressWriter(_ctx(state), job_id, "w1", keeper)
    real, calls = repo.set_progress, []

    def flaky(*args: Any, **kwargs: Any) -> bool:
        calls.append(args)
        if len(calls) == 1:
            raise _dropped("w1")
        return real(*args, **kwargs)

    monkeypatch.setattr(repo, "set_progress", flaky)
    writer(ProgressEvent("prune", 10.0, "pruning"))  # the write fails: the engine is not stopped
    writer(ProgressEvent("finetune", 20.0, "finetuning"))
    writer.flush_final()
    assert not keeper.lost.is_set() and len(calls) == 2
    row = _row(state, job_id)
    assert row.status == "running" and row.stage == "finetune"
    assert {"pruning", "finetuning"} <= set(_messages(client, job_id))


def test_a_finish_retries_and_recognises_its_own_lost_commit(
    client: TestClient, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, keeper = _claimed(client, state)
    real, calls = repo.finish, []

    def committed_then_dropped(session: Any, *args: Any, **kwargs: Any) -> str | None:
        calls.append(args)
        if len(calls) == 1:  # the commit reached the database, its answer did not reach us
            with state.db.session() as other:
                real(other, *args, **kwargs)
            raise _dropped("w1")
        return real(session, *args, **kwargs)

    monkeypatch.setattr(repo, "finish", committed_then_dropped)
    assert end_job(keeper, "failed", "failed: x", error_code="x", error_message="the x failed")
    assert len(calls) == 2
    row = _row(state, job_id)
    assert row.status == "failed" and row.error_message == "the x failed"


def test_a_finish_gives_up_when_the_lease_runs_out(
    client: TestClient, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, keeper = _claimed(client, state)

    def down(*args: Any, **kwargs: Any) -> str | None:
        raise _dropped("w1")

    monkeypatch.setattr(repo, "finish", down)
    monkeypatch.setattr(keeper, "deadline", lambda: 0.0)  # the lease is already over
    with pytest.raises(OperationalError):
        end_job(keeper, "failed", "failed: x", error_code="x", error_message="m")
    assert _row(state, job_id).status == "running"  # left to lease expiry and the sweeper
