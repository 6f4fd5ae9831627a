"""Resumable uploads (/v1/uploads): chunks at the offset, repeats acknowledged, wrong ranges refused, the sha256
checked on completion, one key's session invisible to another (real HTTP, SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from jobstore.db import utcnow
from jobstore.settings import Settings
from jobstore.storage.cleanup import remove_stale_uploads
from service.core.state import AppState
from tests.service.conftest import KEY_A, SPEC

CHUNK = 16 * 1024
DATA = os.urandom(2 * CHUNK + 5000)  # two full chunks and a short last one


@pytest.fixture()
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"upload_chunk_bytes": CHUNK, "max_stored_bytes_per_key": 2 * len(DATA) + 100})


def _create(client: TestClient, data: bytes = DATA, **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/uploads", json={"name": "big.pt", "kind": "model", "size": len(data), **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert r.headers["location"] == f"/v1/uploads/{body['id']}"
    return body


def _put(client: TestClient, upload_id: str, start: int, end: int, data: bytes = DATA) -> httpx.Response:
    return client.put(
        f"/v1/uploads/{upload_id}",
        content=data[start : end + 1],
        headers={"Content-Range": f"bytes {start}-{end}/{len(data)}", "Content-Type": "application/octet-stream"},
    )


def _send_all(client: TestClient, upload_id: str, data: bytes = DATA) -> None:
    for start in range(0, len(data), CHUNK):
        r = _put(client, upload_id, start, min(start + CHUNK, len(data)) - 1, data)
        assert r.status_code == 200, r.text


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["code"] == code
    return body


def test_chunks_in_order_make_a_file_a_job_can_use(client: TestClient, state: AppState) -> None:
    up = _create(client)
    assert (up["offset"], up["chunk_size"], up["state"]) == (0, CHUNK, "open")
    for n, start in enumerate(range(0, len(DATA), CHUNK), start=1):
        r = _put(client, up["id"], start, min(start + CHUNK, len(DATA)) - 1)
        assert r.status_code == 200, r.text
        assert r.json()["offset"] == min(n * CHUNK, len(DATA)) == int(r.headers["upload-offset"])
    head = client.head(f"/v1/uploads/{up['id']}")
    assert head.status_code == 200 and head.headers["upload-offset"] == str(len(DATA))
    assert head.headers["upload-length"] == str(len(DATA))
    r = client.post(f"/v1/uploads/{up['id']}/complete", json={"sha256": hashlib.sha256(DATA).hexdigest()})
    assert r.status_code == 200, r.text
    info = r.json()
    assert (info["size"], info["sha256"], info["name"]) == (len(DATA), hashlib.sha256(DATA).hexdigest(), "big.pt")
    assert b"".join(state.storage.iter_range(f"files/{info['id']}")) == DATA
    assert client.get(f"/v1/files/{info['id']}").json()["size"] == len(DATA)
    assert client.get(f"/v1/uploads/{up['id']}").json()["file_id"] == info["id"]
    job = client.post("/v1/jobs", json={"spec": SPEC, "model_file_id": info["id"]})
    assert job.status_code == 202, job.text


def test_a_repeated_chunk_is_acknowledged_and_not_stored_twice(client: TestClient, state: AppState) -> None:
    up = _create(client)
    assert _put(client, up["id"], 0, CHUNK - 1).json()["offset"] == CHUNK
    again = _put(client, up["id"], 0, CHUNK - 1)  # its answer was lost, the client sends it again
    assert again.status_code == 200 and again.json()["offset"] == CHUNK
    _send_all_from(client, up["id"], CHUNK)
    info = client.post(f"/v1/uploads/{up['id']}/complete").json()
    assert info["sha256"] == hashlib.sha256(DATA).hexdigest() and info["size"] == len(DATA)


def _send_all_from(client: TestClient, upload_id: str, offset: int) -> None:
    for start in range(offset, len(DATA), CHUNK):
        assert _put(client, upload_id, start, min(start + CHUNK, len(DATA)) - 1).status_code == 200


def test_a_chunk_past_the_offset_is_409_with_the_offset(client: TestClient) -> None:
    up = _create(client)
    body = _problem(_put(client, up["id"], CHUNK, 2 * CHUNK - 1), 409, "upload_offset_mismatch")
    assert "0 bytes" in body["detail"]
    r = _put(client, up["id"], CHUNK, 2 * CHUNK - 1)
    assert r.headers["upload-offset"] == "0"
    assert client.get(f"/v1/uploads/{up['id']}").json()["offset"] == 0


@pytest.mark.parametrize(
    "content_range",
    [None, "bytes 0-99", f"bytes 0-{CHUNK - 1}/{len(DATA) + 1}", f"bytes 0-{CHUNK - 2}/{len(DATA)}", "items 0-1/2"],
)
def test_a_malformed_or_wrong_range_is_416(client: TestClient, content_range: str | None) -> None:
    up = _create(client)
    headers = {"Content-Range": content_range} if content_range else {}
    r = client.put(f"/v1/uploads/{up['id']}", content=DATA[: CHUNK - 1], headers=headers)
    _problem(r, 416, "range_not_satisfiable")
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"


def test_a_body_shorter_than_its_range_is_refused_and_not_counted(client: TestClient) -> None:
    up = _create(client)
    r = client.put(
        f"/v1/uploads/{up['id']}",
        content=iter([DATA[:100]]),  # streamed: no Content-Length to catch it early
        headers={"Content-Range": f"bytes 0-{CHUNK - 1}/{len(DATA)}"},
    )
    _problem(r, 422, "validation_error")
    assert client.get(f"/v1/uploads/{up['id']}").json()["offset"] == 0


def test_complete_with_a_wrong_sha256_is_a_problem_and_discards_the_upload(client: TestClient, state: AppState) -> None:
    up = _create(client)
    _send_all(client, up["id"])
    body = _problem(
        client.post(f"/v1/uploads/{up['id']}/complete", json={"sha256": "0" * 64}), 422, "checksum_mismatch"
    )
    assert hashlib.sha256(DATA).hexdigest() in body["detail"]
    _problem(client.get(f"/v1/uploads/{up['id']}"), 404, "not_found")
    assert client.get("/v1/files").json()["items"] == []
    assert state.storage.list("files") == []
    assert not list((state.settings.storage_dir / ".tmp").glob("upl_*.part"))


def test_the_sha256_announced_at_creation_is_checked(client: TestClient) -> None:
    up = _create(client, sha256="1" * 64)
    _send_all(client, up["id"])
    _problem(client.post(f"/v1/uploads/{up['id']}/complete"), 422, "checksum_mismatch")


def test_complete_before_every_byte_is_409_and_repeating_it_after_is_the_same_file(client: TestClient) -> None:
    up = _create(client)
    _put(client, up["id"], 0, CHUNK - 1)
    r = client.post(f"/v1/uploads/{up['id']}/complete")
    _problem(r, 409, "conflict")
    assert r.headers["upload-offset"] == str(CHUNK)
    _send_all_from(client, up["id"], CHUNK)
    first = client.post(f"/v1/uploads/{up['id']}/complete").json()
    assert client.post(f"/v1/uploads/{up['id']}/complete").json()["id"] == first["id"]  # a lost answer, asked again
    assert len(client.get("/v1/files").json()["items"]) == 1
    _problem(_put(client, up["id"], 0, CHUNK - 1), 409, "conflict")  # done: no more chunks


def test_another_key_cannot_see_or_use_an_upload(client: TestClient, bob: TestClient) -> None:
    up = _create(client)
    _problem(bob.get(f"/v1/uploads/{up['id']}"), 404, "not_found")
    assert bob.head(f"/v1/uploads/{up['id']}").status_code == 404
    _problem(_put(bob, up["id"], 0, CHUNK - 1), 404, "not_found")
    _problem(bob.post(f"/v1/uploads/{up['id']}/complete"), 404, "not_found")
    _problem(bob.delete(f"/v1/uploads/{up['id']}"), 404, "not_found")
    assert client.get(f"/v1/uploads/{up['id']}").json()["offset"] == 0


def test_a_file_over_the_cap_is_413_before_any_byte(client: TestClient, state: AppState) -> None:
    size = state.settings.max_upload_bytes + 1
    r = client.post("/v1/uploads", json={"name": "huge.pt", "size": size})
    _problem(r, 413, "payload_too_large")


def test_open_uploads_count_against_the_stored_bytes_quota(client: TestClient, state: AppState) -> None:
    quota = state.settings.max_stored_bytes_per_key
    first = _create(client)
    _create(client)  # the two open ones reserve all but 100 bytes of the quota
    body = _problem(client.post("/v1/uploads", json={"name": "c.pt", "size": 101}), 429, "quota_exceeded")
    assert str(quota) in body["detail"]
    assert client.post("/v1/uploads", json={"name": "c.pt", "size": 100}).status_code == 201  # the rest fits
    assert client.delete(f"/v1/uploads/{first['id']}").status_code == 204
    assert _create(client)["state"] == "open"  # a deleted session frees what it reserved


def test_deleting_an_upload_frees_its_staged_bytes(client: TestClient, state: AppState) -> None:
    up = _create(client)
    _put(client, up["id"], 0, CHUNK - 1)
    assert client.delete(f"/v1/uploads/{up['id']}").status_code == 204
    _problem(client.get(f"/v1/uploads/{up['id']}"), 404, "not_found")
    assert not list((state.settings.storage_dir / ".tmp").glob("upl_*.part"))


def test_abandoned_uploads_are_removed_with_their_staged_bytes(client: TestClient, state: AppState) -> None:
    up = _create(client)
    _put(client, up["id"], 0, CHUNK - 1)
    later = utcnow() + timedelta(seconds=state.settings.upload_part_stale_after + 1)
    assert remove_stale_uploads(state.db, state.storage, state.settings.upload_part_stale_after, now=utcnow()) == 0
    assert remove_stale_uploads(state.db, state.storage, state.settings.upload_part_stale_after, now=later) == 1
    assert not list((state.settings.storage_dir / ".tmp").glob("upl_*.part"))
    _problem(client.get(f"/v1/uploads/{up['id']}"), 404, "not_found")


def test_a_session_whose_staged_bytes_were_cleaned_up_is_404(client: TestClient, state: AppState) -> None:
    up = _create(client)
    _put(client, up["id"], 0, CHUNK - 1)
    (state.settings.storage_dir / ".tmp" / f"{up['id']}.part").unlink()  # the stale-part cleanup ran
    body = _problem(_put(client, up["id"], CHUNK, 2 * CHUNK - 1), 404, "not_found")
    assert "start a new upload" in body["detail"]


def test_uploads_on_s3_use_multipart_parts(moto_s3: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)
    s3 = settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_bucket": "uploads-test",
            "s3_endpoint_url": moto_s3.endpoint,
            "s3_region": "us-east-1",
            "s3_create_bucket": True,
            "max_upload_bytes": 16 * 1024 * 1024,
            "max_stored_bytes_per_key": 64 * 1024 * 1024,
        }
    )
    from service.app import create_app

    data = os.urandom(11 * 1024 * 1024)
    app: FastAPI = create_app(s3)
    with TestClient(app, headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        up = _create(c, data)
        chunk = up["chunk_size"]
        assert chunk == 5 * 1024 * 1024  # S3's smallest part, above the configured chunk size
        for start in range(0, len(data), chunk):
            r = _put(c, up["id"], start, min(start + chunk, len(data)) - 1, data)
            assert r.status_code == 200, r.text
        assert _put(c, up["id"], 0, chunk - 1, data).json()["offset"] == len(data)  # a repeat changes nothing
        info = c.post(f"/v1/uploads/{up['id']}/complete", json={"sha256": hashlib.sha256(data).hexdigest()})
        assert info.status_code == 200, info.text
        state: AppState = app.state.prunekit
        assert hashlib.sha256(b"".join(state.storage.iter_range(f"files/{info.json()['id']}"))).digest() == (
            hashlib.sha256(data).digest()
        )
