"""The status cache (jobstore/job_changes.py): served from memory, dropped on a job's change notification from
any process, bypassed while its listener is down, never shown to another key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from jobstore.db import Database, utcnow
from jobstore.job_changes import StatusCache
from jobstore.repositories import jobs as jobs_repo
from jobstore.settings import Settings
from service.app import create_app
from service.core.state import AppState
from tests.service.conftest import KEY_A, KEY_B, submit
from tests.service.support import PG_ADMIN, wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _live(ttl: float = 10.0) -> tuple[StatusCache, FakeClock]:
    clock = FakeClock()
    cache = StatusCache(ttl, max_bytes=6, clock=clock)
    cache.set_live(True)
    return cache, clock


def test_a_body_is_served_to_its_owner_until_invalidated_or_expired() -> None:
    cache, clock = _live()
    cache.put("j1", "alice", b"{1}", cache.token())
    assert cache.get("j1", "alice") == b"{1}"
    assert cache.get("j1", "bob") is None  # another key's job is not found, cached or not
    cache.invalidate("j1")
    assert cache.get("j1", "alice") is None
    cache.put("j1", "alice", b"{2}", cache.token())
    clock.now = 10.5
    assert cache.get("j1", "alice") is None  # older than the ttl: the bound if a notification is lost


def test_a_read_that_raced_a_change_is_not_stored() -> None:
    cache, _ = _live()
    token = cache.token()  # a request starts reading the database ...
    cache.invalidate("j2")  # ... a change to any job arrives meanwhile ...
    cache.put("j1", "alice", b"{old}", token)  # ... so what it read may be stale
    assert cache.get("j1", "alice") is None


def test_an_offline_cache_holds_nothing_and_entries_are_bounded() -> None:
    cache, _ = _live()
    for i in range(5):
        cache.put(f"j{i}", "alice", b"{}", cache.token())
    assert [cache.get(f"j{i}", "alice") for i in range(5)] == [None, None, b"{}", b"{}", b"{}"]  # 6 bytes at most
    cache.get("j2", "alice")  # now the most recently used
    cache.put("j5", "alice", b"{}", cache.token())
    assert cache.get("j3", "alice") is None and cache.get("j2", "alice") == b"{}"
    cache.put("big", "alice", b"{too large}", cache.token())  # larger than the whole cache: not kept, evicts nothing
    assert cache.get("big", "alice") is None and cache.get("j5", "alice") == b"{}"
    cache.set_live(False)
    assert cache.get("j4", "alice") is None
    cache.put("j4", "alice", b"{}", cache.token())
    assert cache.get("j4", "alice") is None


# --- on PostgreSQL, through the API --------------------------------------------------------------------------


# The cache runs on PostgreSQL's notifications (SQLite has none: there it is off, test_sqlite_has_no_cache).
on_postgresql = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.fixture()
def cached_app(settings: Settings) -> FastAPI:
    # a ttl far beyond the test: anything fresh that a test sees came from a notification
    return create_app(settings.model_copy(update={"status_cache": True, "status_cache_ttl": 600.0}))


@pytest.fixture()
def alice(cached_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(cached_app, headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        _wait_listening(c)
        yield c


def _sql(url: str, statement: str, job_id: str) -> None:
    """A write by some other process (a worker, an operator's psql), not through this API."""
    db = Database(url)
    try:
        with db.engine.begin() as conn:
            conn.execute(text(statement), {"id": job_id})
    finally:
        db.dispose()


def _listeners(url: str) -> list[int]:
    """Backends listening for job changes on this test database (other tests' servers use other databases)."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN prunekit_job_changed' AND datname = %s",
            (make_url(url).database,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def _wait_listening(client: TestClient) -> None:
    state: AppState = client.app.state.prunekit  # type: ignore[attr-defined]
    wait_for(lambda: client.portal.call(_cache_live, state), 10, "the status cache to listen")  # type: ignore[union-attr]


async def _cache_live(state: AppState) -> bool:
    return state.status_caches.get() is not None


def _claim_elsewhere(url: str, job_id: str) -> None:
    """What a worker process does: a write through another connection pool, not through this API."""
    db = Database(url)
    try:
        with db.session() as s:
            assert jobs_repo.claim(s, job_id, "elsewhere", utcnow(), timedelta(seconds=30), 3)
    finally:
        db.dispose()


@on_postgresql
def test_repeated_polls_are_served_without_a_query(alice: TestClient, statements: list[str]) -> None:
    job = submit(alice)
    first = alice.get(f"/v1/jobs/{job['id']}")
    statements.clear()
    again = [alice.get(f"/v1/jobs/{job['id']}") for _ in range(5)]
    assert not statements, statements
    assert all(r.status_code == 200 and r.content == first.content for r in again)
    assert first.json()["status"] == "queued"


@on_postgresql
def test_a_workers_change_is_seen_long_before_the_ttl(alice: TestClient, pg_url: str) -> None:
    job = submit(alice)
    assert alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"  # now cached
    _claim_elsewhere(pg_url, job["id"])
    wait_for(lambda: alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", 5, "the change to show")


@pytest.fixture()
def job_with_branch(alice: TestClient) -> str:
    job = submit(alice, metadata={"branch": "main"})
    return str(job["id"])


@on_postgresql
def test_metadata_of_a_cached_job_follows_its_rows(alice: TestClient, job_with_branch: str, pg_url: str) -> None:
    assert alice.get(f"/v1/jobs/{job_with_branch}").json()["metadata"] == {"branch": "main"}
    _sql(pg_url, "UPDATE job_metadata SET value = 'feature' WHERE job_id = :id", job_with_branch)
    wait_for(lambda: alice.get(f"/v1/jobs/{job_with_branch}").json()["metadata"] == {"branch": "feature"}, 5, "it")
    _sql(pg_url, "DELETE FROM job_metadata WHERE job_id = :id", job_with_branch)
    wait_for(lambda: alice.get(f"/v1/jobs/{job_with_branch}").json()["metadata"] == {}, 5, "the metadata to go")


@on_postgresql
def test_own_cancel_is_read_at_once(alice: TestClient) -> None:
    job = submit(alice)
    assert alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    assert alice.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "canceled"  # no wait: this process wrote it


@on_postgresql
def test_another_key_never_gets_a_cached_body(alice: TestClient, cached_app: FastAPI) -> None:
    job = submit(alice)
    assert alice.get(f"/v1/jobs/{job['id']}").status_code == 200
    with TestClient(cached_app, headers={"Authorization": f"Bearer {KEY_B}"}) as bob:
        assert bob.get(f"/v1/jobs/{job['id']}").status_code == 404


@on_postgresql
def test_a_lost_listener_sends_reads_to_the_database_until_it_is_back(alice: TestClient, pg_url: str) -> None:
    job = submit(alice)
    assert alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    before = _listeners(pg_url)
    assert before
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        for pid in before:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # no notification can reach the cache now; the change must still show (the cache is dropped, not trusted)
    _claim_elsewhere(pg_url, job["id"])
    wait_for(lambda: alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", 5, "the change to show")
    wait_for(lambda: bool(set(_listeners(pg_url)) - set(before)), 10, "the listener to reconnect")
    _wait_listening(alice)
    _sql(pg_url, "UPDATE jobs SET percent = 42 WHERE id = :id", job["id"])
    wait_for(lambda: alice.get(f"/v1/jobs/{job['id']}").json()["percent"] == 42, 5, "a change after reconnecting")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_has_no_cache(settings: Settings, statements: list[str]) -> None:
    app = create_app(settings.model_copy(update={"status_cache": True}))
    with TestClient(app, headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        job = submit(c)
        statements.clear()
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 200
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert len(statements) == 2  # every read goes to the database
