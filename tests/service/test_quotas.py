"""Per-key quotas (active jobs, stored bytes) answer 429 with Retry-After; the spec's limits answer 422 (real DB)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobstore.settings import Settings
from prunekit.spec import parse_spec
from service.core import quotas
from service.core.errors import QuotaExceeded
from service.core.state import AppState
from service.jobs.service import Submission, create_job
from tests.service.conftest import SPEC, complete_job, submit, upload

RETRY_AFTER = 17
LIMITS: dict[str, Any] = {
    "max_active_jobs_per_key": 2,
    "max_stored_bytes_per_key": 100,
    "quota_retry_after": RETRY_AFTER,
    "max_finetune_epochs": 3,
    "max_sweep_trials": 4,
}


@pytest.fixture()
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=LIMITS)


def _quota_problem(r: Any) -> dict[str, Any]:
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == str(RETRY_AFTER)
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["code"] == "quota_exceeded" and body["status"] == 429
    return body


def _submit(client: TestClient, file_id: str, spec: dict[str, Any] | None = None) -> Any:
    return client.post("/v1/jobs", json={"spec": spec or SPEC, "model_file_id": file_id})


def test_active_jobs_over_the_quota_are_429_until_one_ends(client: TestClient, bob: TestClient) -> None:
    model = upload(client, b"m" * 10)["id"]
    first = _submit(client, model).json()
    assert _submit(client, model).status_code == 202
    body = _quota_problem(_submit(client, model))
    assert "2 queued or running jobs" in body["detail"]
    assert len(client.get("/v1/jobs").json()["items"]) == 2  # the refused one left nothing behind
    assert submit(bob)["status"] == "queued"  # another key has its own quota
    assert client.post(f"/v1/jobs/{first['id']}/cancel").status_code == 202
    assert _submit(client, model).status_code == 202


def test_uploads_past_the_stored_bytes_are_429_and_a_delete_frees_them(client: TestClient, state: AppState) -> None:
    first = upload(client, b"a" * 60)
    r = client.post("/v1/files", files={"file": ("b.pt", b"b" * 60)}, data={"kind": "model"})
    assert "60 bytes" in _quota_problem(r)["detail"]
    assert state.storage.list("files/") == [f"files/{first['id']}"]  # the refused upload's object is gone
    assert client.delete(f"/v1/files/{first['id']}").status_code == 204
    second = upload(client, b"b" * 60)
    assert state.storage.list("files/") == [f"files/{second['id']}"]


def test_a_full_key_is_refused_before_its_body_is_read(client: TestClient, state: AppState) -> None:
    upload(client, b"a" * 100)
    too_big = b"x" * (state.settings.max_upload_bytes + 1)  # would be 413 had the body been read
    _quota_problem(client.post("/v1/files", files={"file": ("big.pt", too_big)}, data={"kind": "model"}))


def test_artifacts_count_towards_the_stored_bytes(client: TestClient, state: AppState) -> None:
    job = submit(client)  # an 11-byte model
    complete_job(state, job["id"], b"z" * 95, {"status": "passed"})
    model = job["model_file_id"]
    _quota_problem(_submit(client, model))  # 106 bytes stored already
    _quota_problem(client.post("/v1/files", files={"file": ("c.pt", b"c")}, data={"kind": "model"}))
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204  # its artifact goes with it
    assert _submit(client, model).status_code == 202


def test_inline_uploads_of_a_submission_count_and_are_discarded_when_refused(
    client: TestClient, state: AppState
) -> None:
    upload(client, b"a" * 50)
    r = client.post("/v1/jobs", files={"model": ("m.pt", b"m" * 60)}, data={"spec": json.dumps(SPEC)})
    _quota_problem(r)
    assert len(state.storage.list("files/")) == 1


def test_spec_fields_over_the_servers_limits_are_422_naming_the_field(client: TestClient) -> None:
    model = upload(client, b"m")["id"]
    r = _submit(client, model, {**SPEC, "finetune": {"epochs": 4}})
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"loc": "finetune.epochs", "msg": "at most 3 epochs on this server, not 4"}]
    sweep = {**SPEC, "kind": "sweep", "sweep": {"sparsities": [0.3, 0.5, 0.7], "seeds": 2}}
    r = _submit(client, model, sweep)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "sweep"
    assert "6 trials" in r.json()["errors"][0]["msg"] and "at most 4" in r.json()["errors"][0]["msg"]
    small = {**SPEC, "kind": "sweep", "sweep": {"sparsities": [0.3, 0.5], "seeds": 2}}
    assert _submit(client, model, small).status_code == 202


def test_concurrent_submits_of_one_key_cannot_both_pass_the_quota(client: TestClient, state: AppState) -> None:
    # The second submit's check waits for the first one's transaction, and then counts the job it committed.
    model = upload(client, b"m")["id"]
    assert _submit(client, model).status_code == 202  # one of the two allowed jobs
    sub = Submission(spec=parse_spec(SPEC), model_file_id=model, data_file_id=None, webhook_url=None, request_hash="h")
    outcome: list[str] = []

    def second() -> None:
        with state.db.sessionmaker() as session:
            try:
                create_job(session, state.settings, "alice", sub, None)
                outcome.append("created")
            except QuotaExceeded:
                outcome.append("refused")

    with state.db.sessionmaker() as first:
        quotas.check_submit(first, state.settings, "alice", sub.spec)  # the first submit holds the key's lock
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and outcome == []  # waiting for the lock, nothing counted yet
        create_job(first, state.settings, "alice", sub, None)  # the second allowed job; its commit frees the lock
    waiter.join(30)
    assert outcome == ["refused"]
    assert len(client.get("/v1/jobs").json()["items"]) == 2


def test_the_openapi_document_names_the_429s(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/files", "/v1/jobs"):
        assert "Retry-After" in paths[path]["post"]["responses"]["429"]["description"]
