"""Service unit-test fixtures: an app per test on SQLite or PostgreSQL, no worker needed."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import AdaptedConnection, Connection

from jobstore.db import make_engine, run_migrations, utcnow
from jobstore.repositories import jobs as jobs_repo
from jobstore.settings import Settings
from service.app import create_app
from service.core.state import AppState
from tests.service.support import MotoS3, create_pg_database, drop_pg_database

KEY_A, KEY_B = "key-alice-" + secrets.token_hex(4), "key-bob-" + secrets.token_hex(4)
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name, url = create_pg_database()
    run_migrations(url)
    try:
        yield url
    finally:
        drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/prunekit.db"
    url: str = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE files, jobs, job_events, stage_durations, webhook_secrets, upload_sessions "
                "RESTART IDENTITY CASCADE"
            )
        )
    engine.dispose()
    return url


@pytest.fixture()
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        storage_dir=tmp_path / "storage",
        broker_dir=tmp_path / "broker",
        api_keys=f"alice:{KEY_A},bob:{KEY_B}",  # type: ignore[arg-type]
        max_upload_bytes=64 * 1024,
        webhook_secret=WEBHOOK_SECRET,  # type: ignore[arg-type]
        webhook_allowed_hosts=["hooks.example.com", "*.example.org", "127.0.0.1"],
        lease_seconds=30,
        # Tests here change jobs behind the API's back and read them at once; the cache, which sees such changes
        # within milliseconds, not at once, has tests of its own (test_status_cache.py).
        status_cache=False,
    )


@pytest.fixture()
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture()
def state(app: FastAPI) -> AppState:
    st: AppState = app.state.prunekit
    return st


@pytest.fixture()
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        yield c


@pytest.fixture()
def statements(state: AppState) -> Iterator[list[str]]:
    """Statements of every engine; on PostgreSQL the status read must come from the loop's async engine."""
    seen: list[str] = []

    def record(conn: Connection, _cursor: object, statement: str, *_: object) -> None:
        on_loop = isinstance(conn.connection.dbapi_connection, AdaptedConnection)
        seen.append(f"{'async' if on_loop else 'sync'}: {statement}")

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


@pytest.fixture()
def bob(app: FastAPI, client: TestClient) -> Iterator[TestClient]:
    with TestClient(app, headers={"Authorization": f"Bearer {KEY_B}"}) as c:
        yield c


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


SPEC: dict[str, Any] = {"pruning": {"method": "magnitude", "sparsity": 0.5}, "finetune": {"epochs": 1}}


def upload(
    client: TestClient, content: bytes = b"model-bytes", kind: str = "model", name: str = "m.pt"
) -> dict[str, Any]:
    r = client.post("/v1/files", files={"file": (name, content)}, data={"kind": kind})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def rotate_webhook_secret(client: TestClient) -> str:
    """Give the client's key a (new) webhook secret and return it (the API shows it only here)."""
    r = client.post("/v1/webhook-secret/rotate")
    assert r.status_code == 201, r.text
    secret: str = r.json()["secret"]
    return secret


def submit(client: TestClient, spec: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Submit a job; one with a webhook_url first gives the key a webhook secret if it has none (as a user must)."""
    if extra.get("webhook_url") and client.get("/v1/webhook-secret").json()["generation"] is None:
        rotate_webhook_secret(client)
    model = upload(client)
    r = client.post("/v1/jobs", json={"spec": spec or SPEC, "model_file_id": model["id"], **extra})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def complete_job(state: AppState, job_id: str, artifact: bytes, report: dict[str, Any]) -> None:
    """Drive a job to succeeded through the same repository calls a worker makes (no engine)."""
    token = "test-" + secrets.token_hex(4)
    prefix = f"jobs/{job_id}/a1-test/"
    with state.db.session() as s:
        assert jobs_repo.claim(s, job_id, token, utcnow(), timedelta(seconds=30), 3)
    w = state.storage.open_writer(prefix + "model.pt")
    w.write(artifact)
    w.commit()
    w = state.storage.open_writer(prefix + "report.json")
    w.write(json.dumps(report).encode())
    w.commit()
    with state.db.session() as s:
        assert jobs_repo.finish(
            s,
            job_id,
            token,
            "succeeded",
            utcnow(),
            artifact_key=prefix + "model.pt",
            artifact_name="model.pt",
            artifact_size=len(artifact),
            artifact_sha256=hashlib.sha256(artifact).hexdigest(),
            report_key=prefix + "report.json",
            gate_status=report.get("status", "passed"),
            gates=report.get("gates", []),
            percent=100.0,
        )
