"""Job metadata: set at submit (JSON and multipart), returned, validated, and filtering lists with status and kind."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from jobstore.models import JobMetadataRecord
from prunekit.client import PrunekitClient
from service.core.state import AppState
from tests.service.conftest import KEY_A, SPEC, submit, upload
from tests.service.support import free_port, wait_for

META = {"git_sha": "0a1b2c3d", "branch": "feature/x:y", "pr": "42"}
SENSITIVITY = {"kind": "sensitivity", "sensitivity": {}}


def _ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [j["id"] for j in r.json()["items"]]


def _field_errors(r: Any) -> list[str]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return [e["loc"] for e in r.json()["errors"]]


def test_metadata_round_trips_through_json(client: TestClient) -> None:
    job = submit(client, metadata=META)
    assert job["metadata"] == META
    assert client.get(f"/v1/jobs/{job['id']}").json()["metadata"] == META
    assert client.get("/v1/jobs").json()["items"][0]["metadata"] == META
    assert submit(client)["metadata"] == {}


def test_metadata_round_trips_through_multipart(client: TestClient) -> None:
    form = {"spec": json.dumps(SPEC), "metadata": json.dumps(META)}
    r = client.post("/v1/jobs", files={"model": ("m.pt", b"inline")}, data=form)
    assert r.status_code == 202, r.text
    assert r.json()["metadata"] == META
    assert client.get(r.headers["Location"]).json()["metadata"] == META


@pytest.mark.parametrize(
    ("metadata", "loc"),
    [
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
        ({"has space": "v"}, "metadata.has space.[key]"),
        ({"k" * 65: "v"}, f"metadata.{'k' * 65}.[key]"),
        ({"": "v"}, "metadata..[key]"),
        ({"pr": "x" * 257}, "metadata.pr"),
        ({"pr": 42}, "metadata.pr"),
        (["pr", "42"], "metadata"),
    ],
)
def test_invalid_metadata_is_a_422_naming_the_field(client: TestClient, metadata: Any, loc: str) -> None:
    model = upload(client)
    r = client.post("/v1/jobs", json={"spec": SPEC, "model_file_id": model["id"], "metadata": metadata})
    assert loc in _field_errors(r)
    form = {"spec": json.dumps(SPEC), "metadata": json.dumps(metadata)}
    r = client.post("/v1/jobs", files={"model": ("m.pt", b"inline")}, data=form)
    assert loc in _field_errors(r)


def test_multipart_metadata_must_be_a_json_object(client: TestClient, state: AppState) -> None:
    r = client.post("/v1/jobs", files={"model": ("m.pt", b"x")}, data={"spec": json.dumps(SPEC), "metadata": "pr=4"})
    assert _field_errors(r) == ["metadata"]
    assert state.storage.list("files/") == []  # the inline upload went away with the refused request


def test_metadata_is_part_of_the_idempotent_request(client: TestClient) -> None:
    model = upload(client)
    body = {"spec": SPEC, "model_file_id": model["id"], "metadata": {"pr": "1"}}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    other = client.post("/v1/jobs", json={**body, "metadata": {"pr": "2"}}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 422 and other.json()["code"] == "idempotency_mismatch"
    form = {"spec": json.dumps(SPEC), "metadata": json.dumps({"pr": "1"})}
    m1 = client.post("/v1/jobs", files={"model": ("m.pt", b"a")}, data=form, headers={"Idempotency-Key": "k2"})
    form2 = {**form, "metadata": json.dumps({"pr": "2"})}
    m2 = client.post("/v1/jobs", files={"model": ("m.pt", b"a")}, data=form2, headers={"Idempotency-Key": "k2"})
    assert m1.status_code == 202 and m2.status_code == 422 and m2.json()["code"] == "idempotency_mismatch"


@pytest.fixture()
def jobs(client: TestClient) -> dict[str, str]:
    """Five jobs: main/compress x2 (one canceled), main/sensitivity, dev/compress, and one without metadata."""
    made = {
        "main_a": submit(client, metadata={"branch": "main", "pr": "1"})["id"],
        "main_b": submit(client, metadata={"branch": "main", "pr": "2"})["id"],
        "main_sens": submit(client, SENSITIVITY, metadata={"branch": "main"})["id"],
        "dev": submit(client, metadata={"branch": "dev", "pr": "1"})["id"],
        "plain": submit(client)["id"],
    }
    assert client.post(f"/v1/jobs/{made['main_b']}/cancel").status_code == 202
    return made


def test_list_filters_by_meta_status_and_kind(client: TestClient, bob: TestClient, jobs: dict[str, str]) -> None:
    def listed(query: str) -> set[str]:
        return set(_ids(client.get(f"/v1/jobs?{query}")))

    assert listed("meta=branch:main") == {jobs["main_a"], jobs["main_b"], jobs["main_sens"]}
    assert listed("meta=branch:main&meta=pr:1") == {jobs["main_a"]}  # every pair must match
    assert listed("meta=pr:1") == {jobs["main_a"], jobs["dev"]}
    assert listed("meta=branch:main&kind=sensitivity") == {jobs["main_sens"]}
    assert listed("kind=compress&status=queued") == {jobs["main_a"], jobs["dev"], jobs["plain"]}
    assert listed("status=canceled") == {jobs["main_b"]}
    assert listed("status=canceled&status=queued") == set(jobs.values())
    assert listed("meta=branch:main&status=canceled&kind=compress") == {jobs["main_b"]}
    assert listed("meta=branch:feature") == set()  # values match exactly, not as prefixes
    assert _ids(bob.get("/v1/jobs?meta=branch:main")) == []  # another key's jobs stay invisible


def test_filters_combine_with_cursor_paging(client: TestClient, jobs: dict[str, str]) -> None:
    seen: list[str] = []
    url = "/v1/jobs?meta=branch:main&limit=1"
    r = client.get(url)
    while True:
        seen += _ids(r)
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
        r = client.get(f"{url}&cursor={cursor}")
    assert seen == [jobs["main_sens"], jobs["main_b"], jobs["main_a"]]  # newest first, each once


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("meta=branch", "meta"),
        ("meta=bad key:v", "meta"),
        (f"meta=pr:{'x' * 257}", "meta"),
        ("&".join(f"meta=k{i}:v" for i in range(17)), "meta"),
        ("kind=compression", "kind"),
        ("status=done", "status.0"),
    ],
)
def test_invalid_list_filters_are_422(client: TestClient, query: str, loc: str) -> None:
    assert loc in _field_errors(client.get(f"/v1/jobs?{query}"))


@pytest.fixture()
def selects(state: AppState) -> Iterator[list[str]]:
    """Every SELECT the app's engine runs while the test does."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(state.db.engine, "before_cursor_execute", record)
    yield seen
    event.remove(state.db.engine, "before_cursor_execute", record)


def test_a_list_loads_all_metadata_in_one_query(client: TestClient, selects: list[str]) -> None:
    for i in range(6):
        submit(client, metadata={"pr": str(i)})
    selects.clear()
    items = client.get("/v1/jobs").json()["items"]
    assert [j["metadata"] for j in items] == [{"pr": str(i)} for i in reversed(range(6))]
    assert len([s for s in selects if "job_metadata" in s]) == 1


def test_deleting_a_job_removes_its_metadata(client: TestClient, state: AppState) -> None:
    job = submit(client, metadata=META)
    kept = submit(client, metadata=META)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    with state.db.session() as s:
        rows = s.execute(select(JobMetadataRecord.job_id, func.count()).group_by(JobMetadataRecord.job_id)).all()
    assert rows == [(kept["id"], len(META))]
    assert client.delete(f"/v1/jobs/{kept['id']}").status_code == 409  # still queued: cancel first


@pytest.fixture()
def live_url(app: FastAPI, client: TestClient) -> Iterator[str]:
    """The app on a real socket (uvicorn in a thread); `client` has already run its startup (migrations)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_client_round_trips_metadata_with_the_real_service(live_url: str, tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"model-bytes")
    with PrunekitClient(live_url, KEY_A) as pk:
        inline = pk.submit_job_multipart(SPEC, model, metadata={"branch": "main", "pr": "9"})
        by_id = pk.submit_job(SENSITIVITY, pk.upload_file(model).id, metadata={"branch": "main"})
        assert inline.metadata == {"branch": "main", "pr": "9"} and by_id.metadata == {"branch": "main"}
        assert [j.id for j in pk.iter_jobs(metadata={"branch": "main"}, page_size=1)] == [by_id.id, inline.id]
        assert [j.id for j in pk.list_jobs(kind="sensitivity", status=["queued", "running"]).items] == [by_id.id]
        pk.cancel_job(inline.id)
        pk.delete_job(inline.id)
        assert [j.id for j in pk.list_jobs(metadata={"pr": "9"}).items] == []
