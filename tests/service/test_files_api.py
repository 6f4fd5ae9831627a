"""The files API: list with cursors, delete unless a queued or running job uses the file, expiry (real DB)."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobstore.db import utcnow
from jobstore.settings import Settings
from jobstore.storage.cleanup import remove_expired_files
from service.core.state import AppState
from tests.service.conftest import SPEC, complete_job, upload
from tests.service.support import wait_for
from worker.context import WorkerContext
from worker.sweeper import Sweeper

TTL = 3600.0


@pytest.fixture()
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"file_ttl_seconds": TTL, "max_stored_bytes_per_key": 100})


def _submit(client: TestClient, file_id: str) -> dict[str, Any]:
    r = client.post("/v1/jobs", json={"spec": SPEC, "model_file_id": file_id})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def _expire(state: AppState, after: float = TTL + 1) -> int:
    return remove_expired_files(state.db, state.storage, TTL, now=utcnow() + timedelta(seconds=after))


def test_list_pages_newest_first_with_expiry_and_use(client: TestClient, bob: TestClient) -> None:
    ids = [upload(client, f"file-{i}".encode(), name=f"f{i}.pt")["id"] for i in range(3)]
    _submit(client, ids[0])
    page1 = client.get("/v1/files", params={"limit": 2}).json()
    page2 = client.get("/v1/files", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert [f["id"] for f in page1["items"] + page2["items"]] == ids[::-1]
    assert page1["next_cursor"] and page2["next_cursor"] is None
    by_id = {f["id"]: f for f in page1["items"] + page2["items"]}
    assert [by_id[i]["in_use"] for i in ids] == [True, False, False]
    first = by_id[ids[0]]
    created, expires = datetime.fromisoformat(first["created_at"]), datetime.fromisoformat(first["expires_at"])
    assert expires - created == timedelta(seconds=TTL)
    assert first["name"] == "f0.pt" and first["kind"] == "model" and first["size"] == 6
    assert client.get(f"/v1/files/{ids[0]}").json() == first
    assert bob.get("/v1/files").json() == {"items": [], "next_cursor": None}
    r = client.get("/v1/files", params={"cursor": "!!"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "cursor"


def test_delete_is_409_while_a_job_uses_the_file_then_removes_it(
    client: TestClient, bob: TestClient, state: AppState
) -> None:
    file_id = upload(client)["id"]
    job = _submit(client, file_id)
    assert bob.delete(f"/v1/files/{file_id}").status_code == 404
    r = client.delete(f"/v1/files/{file_id}")
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    assert file_id in r.json()["detail"] and "queued or running job" in r.json()["detail"]
    assert state.storage.list("files/") == [f"files/{file_id}"]
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert client.delete(f"/v1/files/{file_id}").status_code == 204
    assert state.storage.list("files/") == []
    assert client.get(f"/v1/files/{file_id}").status_code == 404
    assert client.get("/v1/files").json()["items"] == []
    assert client.delete(f"/v1/files/{file_id}").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # the finished job keeps its record


def test_a_finished_jobs_inline_file_can_be_deleted_before_the_job(client: TestClient, state: AppState) -> None:
    r = client.post("/v1/jobs", files={"model": ("m.pt", b"inline")}, data={"spec": json.dumps(SPEC)})
    job = r.json()
    complete_job(state, job["id"], b"artifact", {"status": "passed"})
    assert client.delete(f"/v1/files/{job['model_file_id']}").status_code == 204
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204


def test_expired_files_are_removed_unless_a_queued_job_uses_them(client: TestClient, state: AppState) -> None:
    unused = upload(client, b"u" * 10)["id"]
    queued = upload(client, b"q" * 10)["id"]
    ended = upload(client, b"e" * 10)["id"]
    _submit(client, queued)
    canceled = _submit(client, ended)
    client.post(f"/v1/jobs/{canceled['id']}/cancel")
    assert _expire(state, after=TTL - 60) == 0  # not expired yet
    assert _expire(state) == 2
    assert [f["id"] for f in client.get("/v1/files").json()["items"]] == [queued]
    assert state.storage.list("files/") == [f"files/{queued}"]
    assert client.get(f"/v1/files/{unused}").status_code == 404


def test_expiry_frees_the_quota(client: TestClient, state: AppState) -> None:
    upload(client, b"a" * 90)
    r = client.post("/v1/files", files={"file": ("b.pt", b"b" * 20)}, data={"kind": "model"})
    assert r.status_code == 429 and r.headers["retry-after"]
    assert _expire(state) == 1
    upload(client, b"b" * 20)


def test_the_workers_sweeper_removes_expired_files(
    client: TestClient, state: AppState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its leftover cleanup looks only in this test's folder
    kept = upload(client, b"k")["id"]
    gone = upload(client, b"g")["id"]
    _submit(client, kept)
    settings = state.settings.model_copy(update={"file_ttl_seconds": 0.001, "sweep_interval": 0.1})
    sweeper = Sweeper(WorkerContext(settings, state.db, state.storage, state.broker))
    sweeper.start()
    try:
        wait_for(lambda: client.get(f"/v1/files/{gone}").status_code == 404, 30, "the sweeper to expire a file")
    finally:
        sweeper.stop()
        sweeper.join(30)
    assert client.get(f"/v1/files/{kept}").json()["in_use"] is True
    assert state.storage.list("files/") == [f"files/{kept}"]
