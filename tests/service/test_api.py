"""HTTP API against a real database (SQLite and PostgreSQL) and the filesystem broker; no worker."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.state import AppState
from tests.service.conftest import KEY_A, SPEC, complete_job, rotate_webhook_secret, submit, upload


def _problem(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == code and body["status"] == status
    assert body["type"] == f"https://prunekit.dev/problems/{code}"
    assert body["title"] and body["instance"]
    return body


def _queued_messages(state: AppState) -> list[str]:
    folder = Path(state.settings.broker_dir) / "queue"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_ops_endpoints(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"database": True, "broker": True, "storage": True}
    submit(client)
    text = client.get("/metrics").text
    assert 'prunekit_jobs{queue="cpu",state="queued"} 1.0' in text
    assert 'prunekit_queue_depth{queue="cpu"} 1.0' in text
    assert "prunekit_http_requests_total" in text
    assert client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]


def test_readyz_reports_a_broken_storage(client: TestClient, state: AppState, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    state.storage.root = blocker  # type: ignore[attr-defined]
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["storage"] is False


def test_upload_file_streams_and_hashes(client: TestClient, state: AppState) -> None:
    content = os.urandom(50_000)
    body = upload(client, content, kind="data", name="../../etc/passwd")
    assert body["id"].startswith("fil_") and body["size"] == len(content) and body["kind"] == "data"
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["name"] == "passwd"
    # The storage key comes from the server id, never from the user's file name.
    assert state.storage.list("files/") == [f"files/{body['id']}"]
    assert client.get(f"/v1/files/{body['id']}").json() == body


def test_upload_over_the_cap_is_413_while_streaming(client: TestClient, state: AppState) -> None:
    cap = state.settings.max_upload_bytes

    def body():  # chunked: no Content-Length for the server to trust
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        for _ in range(cap // 8192 + 4):
            yield b"\0" * 8192
        yield b"\r\n--XyZ--\r\n"

    r = client.post("/v1/files", content=body(), headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    _problem(r, 413, "payload_too_large")
    assert state.storage.list("files/") == []
    assert not any((Path(state.settings.storage_dir) / ".tmp").glob("*.part"))


def test_upload_bad_requests(client: TestClient) -> None:
    _problem(
        client.post("/v1/files", content=b"x", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"
    )
    r = client.post("/v1/files", files={"file": ("a", b"x")}, data={"kind": "weights"})
    assert _problem(r, 422, "validation_error")["errors"][0]["loc"] == "kind"
    r = client.post("/v1/files", data={"kind": "model"}, files={"other": ("a", b"x")})
    assert _problem(r, 422, "validation_error")["errors"][0]["loc"] == "other"


def test_submit_json_returns_202_location_and_enqueues(client: TestClient, state: AppState) -> None:
    model = upload(client)
    r = client.post("/v1/jobs", json={"spec": SPEC, "model_file_id": model["id"]})
    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
    assert job["status"] == "queued" and job["queue"] == "cpu" and job["kind"] == "compress"
    assert job["attempts"] == 0 and job["percent"] == 0 and job["artifact"] is None
    assert job["spec"]["pruning"]["sparsity"] == 0.5 and job["links"]["artifact"] is None
    assert job["links"]["events"] == f"/v1/jobs/{job['id']}/events"
    msgs = _queued_messages(state)
    assert len(msgs) == 1 and msgs[0].endswith(".cpu.msg")
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]


def test_gpu_queue_from_spec(client: TestClient, state: AppState) -> None:
    job = submit(client, {**SPEC, "queue": "gpu"})
    assert job["queue"] == "gpu"
    assert _queued_messages(state)[0].endswith(".gpu.msg")
    assert submit(client, {**SPEC, "device": "cuda"})["queue"] == "gpu"


def test_invalid_spec_is_422_with_the_field_path(client: TestClient) -> None:
    model = upload(client)
    bad = {**SPEC, "finetune": {"epochs": -1}}
    r = client.post("/v1/jobs", json={"spec": bad, "model_file_id": model["id"]})
    body = _problem(r, 422, "validation_error")
    assert body["errors"][0]["loc"] == "finetune.epochs"
    r = client.post("/v1/jobs", files={"model": ("m.pt", b"x")}, data={"spec": "finetune:\n  epochs: -1\n"})
    assert _problem(r, 422, "validation_error")["errors"][0]["loc"] == "finetune.epochs"
    r = client.post("/v1/jobs", json={"spec": SPEC})
    assert _problem(r, 422, "validation_error")["errors"][0]["loc"] == "model_file_id"
    r = client.post("/v1/jobs", json={"spec": SPEC, "model_file_id": "fil_000000000000000000000000"})
    assert _problem(r, 422, "validation_error")["errors"][0]["loc"] == "model_file_id"


def test_submit_multipart_inline_files(client: TestClient, state: AppState) -> None:
    r = client.post(
        "/v1/jobs",
        files={"model": ("net.pt", b"model"), "data": ("d.npz", b"data")},
        data={"spec": "pruning:\n  method: magnitude\n  sparsity: 0.3\n"},
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["spec"]["pruning"]["sparsity"] == 0.3
    model = client.get(f"/v1/files/{job['model_file_id']}").json()
    data = client.get(f"/v1/files/{job['data_file_id']}").json()
    assert (model["kind"], model["sha256"]) == ("model", hashlib.sha256(b"model").hexdigest())
    assert data["kind"] == "data"
    r = client.post("/v1/jobs", files={"model": ("m", b"x")}, data={"spec": "{}", "model_file_id": model["id"]})
    _problem(r, 422, "validation_error")
    # A failed submission leaves no stored upload behind.
    assert sorted(state.storage.list("files/")) == sorted([f"files/{model['id']}", f"files/{data['id']}"])


def test_idempotency_key(client: TestClient, state: AppState) -> None:
    model = upload(client)
    body = {"spec": SPEC, "model_file_id": model["id"]}
    r1 = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
    r2 = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
    assert r1.status_code == r2.status_code == 202
    assert r1.json()["id"] == r2.json()["id"]
    assert len(_queued_messages(state)) == 1
    other = {"spec": {**SPEC, "seed": 7}, "model_file_id": model["id"]}
    _problem(client.post("/v1/jobs", json=other, headers={"Idempotency-Key": "k1"}), 422, "idempotency_mismatch")
    # Multipart with the same inline content is the same request too, and stores nothing new.
    form = {"spec": json.dumps(SPEC)}
    r3 = client.post("/v1/jobs", files={"model": ("m.pt", b"abc")}, data=form, headers={"Idempotency-Key": "k2"})
    n_files = len(state.storage.list("files/"))
    r4 = client.post("/v1/jobs", files={"model": ("m.pt", b"abc")}, data=form, headers={"Idempotency-Key": "k2"})
    assert r3.json()["id"] == r4.json()["id"] and len(state.storage.list("files/")) == n_files


def test_auth_and_ownership(client: TestClient, bob: TestClient, app) -> None:
    job = submit(client)
    file_id = job["model_file_id"]
    with TestClient(app) as anon:
        r = anon.get(f"/v1/jobs/{job['id']}")
        _problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        _problem(anon.get("/v1/jobs", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
    for method, path in [
        ("GET", f"/v1/jobs/{job['id']}"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
        ("DELETE", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/artifact"),
        ("GET", f"/v1/jobs/{job['id']}/report"),
        ("GET", f"/v1/jobs/{job['id']}/events"),
        ("GET", f"/v1/files/{file_id}"),
    ]:
        _problem(bob.request(method, path), 404, "not_found")
    assert bob.get("/v1/jobs").json()["items"] == []
    # Bob cannot use Alice's file in his own job either.
    r = bob.post("/v1/jobs", json={"spec": SPEC, "model_file_id": file_id})
    _problem(r, 422, "validation_error")
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_list_newest_first_with_cursor_and_filter(client: TestClient) -> None:
    ids = [submit(client)["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[1]}/cancel")
    page1 = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page1["items"]] == ids[::-1][:2]
    page2 = client.get("/v1/jobs", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    page3 = client.get("/v1/jobs", params={"limit": 2, "cursor": page2["next_cursor"]}).json()
    assert [j["id"] for j in page2["items"] + page3["items"]] == ids[::-1][2:]
    assert page3["next_cursor"] is None
    canceled = client.get("/v1/jobs", params={"status": "canceled"}).json()["items"]
    assert [j["id"] for j in canceled] == [ids[1]]
    _problem(client.get("/v1/jobs", params={"status": "bogus"}), 422, "validation_error")
    _problem(client.get("/v1/jobs", params={"cursor": "!!"}), 422, "validation_error")


def test_cancel_and_delete_rules(client: TestClient, state: AppState) -> None:
    job = submit(client)
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "canceled" and r.json()["finished_at"]
    _problem(client.post(f"/v1/jobs/{job['id']}/cancel"), 409, "invalid_state")

    running = submit(client)
    from datetime import timedelta

    from jobstore.db import utcnow
    from jobstore.repositories import jobs as repository

    with state.db.session() as s:
        assert repository.claim(s, running["id"], "tok", utcnow(), timedelta(seconds=30), 3)
    r = client.post(f"/v1/jobs/{running['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "running"  # the worker stops it
    _problem(client.delete(f"/v1/jobs/{running['id']}"), 409, "invalid_state")

    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    _problem(client.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    # The model was uploaded separately (reusable), so deleting the job keeps it.
    assert client.get(f"/v1/files/{job['model_file_id']}").status_code == 200


def test_delete_removes_outputs_and_inline_inputs(client: TestClient, state: AppState) -> None:
    r = client.post("/v1/jobs", files={"model": ("m.pt", b"inline")}, data={"spec": json.dumps(SPEC)})
    job = r.json()
    complete_job(state, job["id"], b"artifact", {"status": "passed"})
    assert state.storage.list(f"jobs/{job['id']}/")
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert state.storage.list(f"jobs/{job['id']}/") == []
    assert state.storage.list("files/") == []
    _problem(client.get(f"/v1/files/{job['model_file_id']}"), 404, "not_found")


def test_artifact_ranges_etag_and_report(client: TestClient, state: AppState) -> None:
    job = submit(client)
    _problem(client.get(f"/v1/jobs/{job['id']}/artifact"), 409, "not_ready")
    _problem(client.get(f"/v1/jobs/{job['id']}/report"), 409, "not_ready")
    artifact = os.urandom(3_000_000)
    report = {
        "status": "gate_missed",
        "gates": [
            {
                "name": "max_accuracy_drop",
                "value": 0.1,
                "threshold": 0.02,
                "comparison": "<=",
                "passed": False,
                "reason": "",
            }
        ],
    }
    complete_job(state, job["id"], artifact, report)

    done = client.get(f"/v1/jobs/{job['id']}").json()
    sha = hashlib.sha256(artifact).hexdigest()
    assert done["status"] == "succeeded" and done["gate_status"] == "gate_missed"
    assert done["gates"][0]["name"] == "max_accuracy_drop"
    assert done["artifact"] == {"name": "model.pt", "size": len(artifact), "sha256": sha}
    assert done["links"]["artifact"] == f"/v1/jobs/{job['id']}/artifact"

    r = client.get(done["links"]["artifact"])
    assert r.status_code == 200 and r.content == artifact
    assert r.headers["etag"] == f'"{sha}"' and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-disposition"] == 'attachment; filename="model.pt"'
    r = client.get(done["links"]["artifact"], headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == artifact[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(artifact)}"
    r = client.get(done["links"]["artifact"], headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == artifact[-10:]
    r = client.get(done["links"]["artifact"], headers={"Range": f"bytes={len(artifact)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(artifact)}"
    assert client.get(done["links"]["artifact"], headers={"If-None-Match": f'"{sha}"'}).status_code == 304
    # Positions with more digits than int() takes (4300) used to be a 500; they are past the end like any other.
    huge = "9" * 5000
    r = client.get(done["links"]["artifact"], headers={"Range": f"bytes={huge}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(artifact)}"
    r = client.get(done["links"]["artifact"], headers={"Range": f"bytes=10-{huge}"})
    assert r.status_code == 206 and r.content == artifact[10:]
    r = client.get(done["links"]["artifact"], headers={"Range": f"bytes=-{huge}"})
    assert r.status_code == 206 and r.content == artifact
    r = client.get(done["links"]["artifact"], headers={"Range": f"bytes={'0' * 5000}5-9"})
    assert r.status_code == 206 and r.content == artifact[5:10]

    assert client.get(done["links"]["report"]).json() == report
    html = client.get(done["links"]["report_html"])
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<html" in html.text.lower()
    page = client.get("/ui")
    assert page.status_code == 200 and job["id"] in page.text


def test_events_after(client: TestClient, state: AppState) -> None:
    job = submit(client)
    from jobstore.repositories import jobs as repository

    with state.db.session() as s:
        for epoch in range(3):
            repository.add_event(s, job["id"], "metric", f"epoch {epoch}", stage="finetune", data={"epoch": epoch})
    page = client.get(f"/v1/jobs/{job['id']}/events").json()
    kinds = [e["kind"] for e in page["items"]]
    assert kinds == ["state", "metric", "metric", "metric"]
    assert page["items"][1]["data"] == {"epoch": 0}
    after = page["items"][1]["seq"]
    rest = client.get(f"/v1/jobs/{job['id']}/events", params={"after": after}).json()
    assert [e["data"]["epoch"] for e in rest["items"]] == [1, 2]
    assert rest["next_after"] == page["next_after"] == page["items"][-1]["seq"]
    empty = client.get(f"/v1/jobs/{job['id']}/events", params={"after": rest["next_after"]}).json()
    assert empty == {"items": [], "next_cursor": None, "next_after": rest["next_after"]}


def test_webhook_url_must_be_allowlisted(client: TestClient) -> None:
    rotate_webhook_secret(client)
    model = upload(client)
    for url in ["http://internal.local/hook", "ftp://hooks.example.com/x", "http://user:pw@hooks.example.com/"]:
        r = client.post("/v1/jobs", json={"spec": SPEC, "model_file_id": model["id"], "webhook_url": url})
        assert _problem(r, 422, "validation_error")["errors"][0]["loc"] == "webhook_url", url
    ok = client.post(
        "/v1/jobs", json={"spec": SPEC, "model_file_id": model["id"], "webhook_url": "https://hooks.example.com/x"}
    )
    assert ok.status_code == 202


def test_unknown_route_and_method_are_problems(client: TestClient) -> None:
    _problem(client.get("/v1/nothing"), 404, "not_found")
    assert client.put("/v1/jobs").status_code == 405


def test_auth_disabled_uses_local_owner(settings, caplog) -> None:
    from service.app import create_app

    with caplog.at_level("WARNING"):
        app = create_app(settings.model_copy(update={"auth_disabled": True}))
    assert "AUTHENTICATION IS DISABLED" in caplog.text
    with TestClient(app) as anon:
        job = submit(anon)
        assert anon.get(f"/v1/jobs/{job['id']}").status_code == 200
    with TestClient(app, headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        assert c.get("/v1/jobs").json()["items"][0]["id"] == job["id"]


def _nest(levels: int, leaf: object = 1, key: str | None = "a") -> object:
    """`levels` dicts (or lists when key is None) inside each other around `leaf`."""
    out = leaf
    for _ in range(levels):
        out = {key: out} if key is not None else [out]
    return out


def test_query_integers_beyond_64_bits_are_422(client: TestClient) -> None:
    # The keys are BIGINT (PostgreSQL) / INTEGER (SQLite): a larger value used to reach the database and fail there.
    from service.jobs.service import encode_cursor

    job = submit(client)
    events = f"/v1/jobs/{job['id']}/events"
    for after in ["99999999999999999999", str(2**63), "-1", "9" * 5000]:
        body = _problem(client.get(events, params={"after": after}), 422, "validation_error")
        assert body["errors"][0]["loc"] == "after", after
    top = client.get(events, params={"after": str(2**63 - 1)})
    assert top.status_code == 200 and top.json()["items"] == []
    for pk in [2**63, 10**20, -1, 0]:
        body = _problem(client.get("/v1/jobs", params={"cursor": encode_cursor(pk)}), 422, "validation_error")
        assert body["errors"] == [{"loc": "cursor", "msg": "invalid cursor"}], pk
    page = client.get("/v1/jobs", params={"cursor": encode_cursor(2**63 - 1)})
    assert page.status_code == 200 and [j["id"] for j in page.json()["items"]] == [job["id"]]


def test_deeply_nested_spec_is_422_not_a_recursion_error(client: TestClient) -> None:
    model = upload(client)

    def post_json(text: str):
        return client.post("/v1/jobs", content=text, headers={"Content-Type": "application/json"})

    # Deeper than the JSON decoder's own recursion survives (built as text: json.dumps would recurse too).
    deep = '{"a":' * 10_000 + "1" + "}" * 10_000
    r = post_json(f'{{"spec": {deep}, "model_file_id": "{model["id"]}"}}')
    assert "nested deeper than 64 levels" in _problem(r, 422, "validation_error")["detail"]
    r = post_json("[" * 10_000 + "]" * 10_000)
    assert _problem(r, 422, "validation_error")["errors"][0]["loc"] == "body"
    # Parsed fine, but past the limit: refused before pydantic, naming the field.
    for value in [_nest(100), _nest(100, key=None)]:
        r = client.post("/v1/jobs", json={"spec": {"model": {"kwargs": value}}, "model_file_id": model["id"]})
        body = _problem(r, 422, "validation_error")
        assert body["errors"] == [{"loc": "spec", "msg": "nested deeper than 64 levels"}]
    # The limit itself is accepted: spec, model and kwargs are three of the 64 levels.
    ok = client.post("/v1/jobs", json={"spec": {"model": {"kwargs": _nest(62)}}, "model_file_id": model["id"]})
    assert ok.status_code == 202, ok.text
    r = client.post("/v1/jobs", json={"spec": {"model": {"kwargs": _nest(63)}}, "model_file_id": model["id"]})
    assert _problem(r, 422, "validation_error")["errors"][0]["loc"] == "spec"

    # The multipart spec field is YAML: deep nesting, self-reference and alias bombs are refused the same way.
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{k}: &{k} [{', '.join([f'*{p}'] * 10)}]\n" for p, k in zip("abcdef", "bcdefg", strict=True)
    )
    for text, msg in [
        ("model: {kwargs: " + "[" * 10_000 + "]" * 10_000 + "}", "nested deeper than 64 levels"),
        (json.dumps({"model": {"kwargs": _nest(100)}}), "nested deeper than 64 levels"),
        ("model: {kwargs: {loop: &l [*l]}}", "nested deeper than 64 levels"),
        (bomb, "more than 100000 values"),
        ("seed: " + "9" * 5000, "not valid YAML/JSON"),
    ]:
        r = client.post("/v1/jobs", files={"model": ("m.pt", b"x")}, data={"spec": text})
        assert msg in _problem(r, 422, "validation_error")["detail"], text[:40]


def test_webhook_url_with_a_bad_port_or_host_is_422(client: TestClient) -> None:
    # These used to be accepted here and to crash the delivery once the job had finished.
    rotate_webhook_secret(client)
    model = upload(client)
    for url in [
        "http://hooks.example.com:99999/hook",
        "http://hooks.example.com:0/hook",
        "http://hooks.example.com:abc/hook",
        "http://hooks.example.com:-1/hook",
        "http://[::1/hook",
        "http://a..example.org/hook",
        f"http://{'a' * 64}.example.org/hook",
    ]:
        r = client.post("/v1/jobs", json={"spec": SPEC, "model_file_id": model["id"], "webhook_url": url})
        assert _problem(r, 422, "validation_error")["errors"][0]["loc"] == "webhook_url", url
    r = client.post(
        "/v1/jobs",
        files={"model": ("m.pt", b"x")},
        data={"spec": json.dumps(SPEC), "webhook_url": "http://hooks.example.com:99999/hook"},
    )
    body = _problem(r, 422, "validation_error")
    assert body["errors"][0]["loc"] == "webhook_url" and "port" in body["detail"]
    ok = client.post(
        "/v1/jobs",
        json={"spec": SPEC, "model_file_id": model["id"], "webhook_url": "https://hooks.example.com:8443/x"},
    )
    assert ok.status_code == 202, ok.text


def test_api_key_names_longer_than_the_owner_column_fail_at_start_up(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr, ValidationError

    from jobstore.models import FileRecord, JobRecord
    from jobstore.settings import OWNER_MAX_LENGTH, Settings
    from service.app import create_app
    from service.main import app_factory

    assert FileRecord.__table__.c.owner.type.length == JobRecord.__table__.c.owner.type.length == OWNER_MAX_LENGTH
    long_name = "n" * (OWNER_MAX_LENGTH + 1)
    with pytest.raises(ValidationError, match=f"key name is {OWNER_MAX_LENGTH + 1} characters") as info:
        Settings(api_keys=f"alice:{KEY_A},{long_name}:the-secret-key")  # type: ignore[arg-type]
    assert "the-secret-key" not in str(info.value) and KEY_A not in str(info.value)
    with pytest.raises(ValidationError, match="must look like"):
        Settings(api_keys="only-a-key")  # type: ignore[arg-type]
    # From the environment, as the server starts: it refuses to start instead of failing requests later.
    monkeypatch.setenv("PRUNEKIT_API_KEYS", f"{long_name}:the-secret-key")
    with pytest.raises(ValidationError, match="PRUNEKIT_API_KEYS entry 1"):
        app_factory()

    # A name of exactly the column's length works end to end (PostgreSQL would refuse a longer one).
    name = "n" * OWNER_MAX_LENGTH
    app = create_app(settings.model_copy(update={"api_keys": SecretStr(f"{name}:{KEY_A}")}))
    with TestClient(app, headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        job = submit(c)
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 200


@pytest.mark.parametrize("tamper", ["truncated", "same_size_other_bytes"])
def test_a_tampered_artifact_fails_cleanly_instead_of_streaming(
    client: TestClient, state: AppState, tamper: str
) -> None:
    # Another tenant's code once overwrote an artifact: the download must not send a short or foreign body.
    job = submit(client)
    artifact = os.urandom(200_000)
    complete_job(state, job["id"], artifact, {"status": "passed", "gates": []})
    key = client.get(f"/v1/jobs/{job['id']}").json()
    stored = f"jobs/{job['id']}/a1-test/model.pt"
    replacement = artifact[:1000] if tamper == "truncated" else bytes(len(artifact))
    w = state.storage.open_writer(stored)
    w.write(replacement)
    w.commit()
    r = client.get(key["links"]["artifact"])
    body = _problem(r, 500, "stored_object_corrupt")
    assert "nothing was sent" in body["detail"] and str(state.settings.storage_dir) not in r.text
    assert client.get(key["links"]["artifact"], headers={"Range": "bytes=0-9"}).status_code == 500
