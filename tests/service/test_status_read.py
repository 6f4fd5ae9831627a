"""The hot read of GET /v1/jobs/{id} (one Core query, docs/benchmarks.md) and the pool's dead-connection check."""

from __future__ import annotations

import psycopg
from fastapi.testclient import TestClient
from sqlalchemy import text

from jobstore.db import Database
from jobstore.repositories import jobs as jobs_repo
from jobstore.views import job_view
from service.core.state import AppState
from tests.service.conftest import complete_job, submit
from tests.service.support import PG_ADMIN, wait_for


def _orm_view(state: AppState, job_id: str, owner: str) -> object:
    with state.db.sessionmaker() as session:
        job = jobs_repo.get_job(session, job_id, owner)
        assert job is not None
        return job_view(job).model_dump(mode="json")


def test_status_body_is_the_orm_view_in_one_query(client: TestClient, state: AppState, statements: list[str]) -> None:
    job = submit(client, metadata={"pr": "7", "branch": "main", "git_sha": "abc"})
    complete_job(state, job["id"], b"pruned", {"summary": {}})
    statements.clear()
    r = client.get(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200, r.text
    assert statements and len(statements) == 1, statements  # job + metadata together, no BEGIN of its own
    assert statements[0].startswith("async" if state.db.url.startswith("postgresql") else "sync"), statements
    body = r.json()
    assert body == _orm_view(state, job["id"], "alice")
    assert body["status"] == "succeeded" and body["artifact"]["size"] == len(b"pruned")
    assert list(body["metadata"]) == ["branch", "git_sha", "pr"]


def test_status_of_a_job_without_metadata(client: TestClient, state: AppState) -> None:
    job = submit(client)
    body = client.get(f"/v1/jobs/{job['id']}").json()
    assert body == _orm_view(state, job["id"], "alice")
    assert body["metadata"] == {} and body["status"] == "queued"


def test_another_keys_job_is_a_problem_404(client: TestClient, bob: TestClient) -> None:
    job = submit(client)
    for r in (bob.get(f"/v1/jobs/{job['id']}"), client.get("/v1/jobs/job_missing")):
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"/v1/jobs/{job['id']}", headers={"Authorization": "Bearer nope"}).status_code == 401


def _backend_pid(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_the_pool_replaces_a_connection_the_server_ended(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        first = _backend_pid(db)
        assert _backend_pid(db) == first  # a healthy idle connection is reused, not reopened
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            wait_for(
                lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (first,)).fetchone(),
                10,
                "the backend to exit",
            )
        assert _backend_pid(db) != first  # no error: the checkout saw the closed socket and opened another
    finally:
        db.dispose()
