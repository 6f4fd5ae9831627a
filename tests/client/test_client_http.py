"""PrunekitClient against a fake API over real HTTP: errors, retries, idempotent submits, waiting."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from prunekit.client import (
    AuthError,
    ConflictError,
    IdempotencyMismatchError,
    NotFoundError,
    NotReadyError,
    PrunekitClient,
    RequestError,
    RetryPolicy,
    ServerError,
    UnreachableError,
    ValidationError,
    WaitTimeoutError,
)
from tests.client.fake_bodies import new_job
from tests.client.prunekit_fake_api import FAST_RETRY, GOOD_KEY, FakeApi, FakeServer, Plan, SleepLog


def _upload(client: PrunekitClient, tmp_path: Path, content: bytes = b"model-bytes" * 1000) -> str:
    p = tmp_path / "model.pt"
    p.write_bytes(content)
    return client.upload_file(p, kind="model").id


def test_wrong_key_raises_auth_error(fake: FakeServer) -> None:
    with PrunekitClient(fake.url, "wrong", retry=FAST_RETRY) as c, pytest.raises(AuthError) as info:
        c.get_job("job_x")
    assert info.value.status == 401
    assert info.value.code == "unauthorized"


def test_missing_job_raises_not_found(client: PrunekitClient) -> None:
    with pytest.raises(NotFoundError) as info:
        client.get_job("job_missing")
    assert "job_missing" in info.value.detail


def test_validation_error_carries_field_paths(client: PrunekitClient, tmp_path: Path) -> None:
    file_id = _upload(client, tmp_path)
    with pytest.raises(ValidationError) as info:
        client.submit_job({"pruning": {"sparsity": 1.5}}, file_id)
    assert info.value.errors[0].loc == "pruning.sparsity"
    assert "pruning.sparsity" in str(info.value)


def test_upload_streams_the_file_and_reports_its_sha(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB, binary
    p = tmp_path / "big.pt"
    p.write_bytes(content)
    info = client.upload_file(p, kind="data")
    assert info.sha256 == hashlib.sha256(content).hexdigest()
    assert info.kind == "data"
    assert api.file_bytes[info.id] == content


def test_retried_upload_resends_the_whole_file(
    client: PrunekitClient, api: FakeApi, tmp_path: Path, sleeps: SleepLog
) -> None:
    api.fail("POST", "/v1/files", times=2, status=503)
    content = b"abc" * 10000
    p = tmp_path / "m.pt"
    p.write_bytes(content)
    info = client.upload_file(p)
    assert api.file_bytes[info.id] == content
    assert len(api.calls("POST", "/v1/files")) == 3
    assert len(sleeps.delays) == 2


def test_get_retries_5xx_with_backoff(client: PrunekitClient, api: FakeApi, sleeps: SleepLog) -> None:
    job_id = api.add_job()
    api.fail("GET", f"/v1/jobs/{job_id}", times=2, status=503)
    api.fail("GET", f"/v1/jobs/{job_id}", times=1, status=500)
    job = client.get_job(job_id)
    assert job.id == job_id
    assert len(api.calls("GET", f"/v1/jobs/{job_id}")) == 4
    assert len(sleeps.delays) == 3
    assert all(d > 0 for d in sleeps.delays)


def test_retries_end_in_server_error(client: PrunekitClient, api: FakeApi) -> None:
    job_id = api.add_job()
    api.fail("GET", f"/v1/jobs/{job_id}", times=10, status=502)
    with pytest.raises(ServerError) as info:
        client.get_job(job_id)
    assert info.value.status == 502
    assert len(api.calls("GET", f"/v1/jobs/{job_id}")) == FAST_RETRY.attempts


def test_retry_after_is_honoured(fake: FakeServer, api: FakeApi, sleeps: SleepLog) -> None:
    job_id = api.add_job()
    api.fail("GET", f"/v1/jobs/{job_id}", times=1, status=503, retry_after="0.04")
    policy = RetryPolicy(attempts=3, backoff=0.001, max_backoff=1.0)
    with PrunekitClient(fake.url, GOOD_KEY, retry=policy, sleep=sleeps) as c:
        c.get_job(job_id)
    assert sleeps.delays[0] >= 0.04


def test_dropped_connection_is_retried_for_reads(client: PrunekitClient, api: FakeApi) -> None:
    job_id = api.add_job()
    api.fail("GET", f"/v1/jobs/{job_id}", times=2, action="drop")
    assert client.get_job(job_id).id == job_id


def test_non_idempotent_request_is_not_retried_after_it_may_have_been_processed(
    client: PrunekitClient, api: FakeApi
) -> None:
    api.fail("POST", "/v1/anything", times=5, status=503)
    with pytest.raises(ServerError):
        client._send("POST", "/v1/anything", idempotent=False)
    assert len(api.calls("POST", "/v1/anything")) == 1
    api.fail("POST", "/v1/other", times=5, action="drop")
    with pytest.raises(UnreachableError):
        client._send("POST", "/v1/other", idempotent=False)
    assert len(api.calls("POST", "/v1/other")) == 1


def test_unreachable_server(dead_url: str, sleeps: SleepLog) -> None:
    with PrunekitClient(dead_url, GOOD_KEY, retry=FAST_RETRY, sleep=sleeps) as c, pytest.raises(UnreachableError):
        c.get_job("job_x")
    assert len(sleeps.delays) == FAST_RETRY.attempts - 1


def test_submit_retry_reuses_the_idempotency_key(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    file_id = _upload(client, tmp_path)
    # The first try reaches the server, but its answer is lost: the retry must not create a second job.
    api.fail("POST", "/v1/jobs", times=1, action="drop")
    job = client.submit_job({"version": 1}, file_id)
    calls = api.calls("POST", "/v1/jobs")
    assert len(calls) == 2
    keys = {c.headers.get("Idempotency-Key") for c in calls}
    assert len(keys) == 1 and None not in keys
    assert len(api.jobs) == 1 and job.id in api.jobs


def test_submit_same_key_same_job_other_body_mismatch(client: PrunekitClient, tmp_path: Path) -> None:
    file_id = _upload(client, tmp_path)
    first = client.submit_job({"version": 1}, file_id, idempotency_key="k1")
    again = client.submit_job({"version": 1}, file_id, idempotency_key="k1")
    assert first.id == again.id
    with pytest.raises(IdempotencyMismatchError):
        client.submit_job({"version": 1, "seed": 3}, file_id, idempotency_key="k1")


def test_list_follows_cursor(client: PrunekitClient, api: FakeApi) -> None:
    ids = [api.add_job() for _ in range(7)]
    seen = [j.id for j in client.iter_jobs(page_size=3)]
    assert seen == list(reversed(ids))
    page = client.list_jobs(limit=2)
    assert len(page.items) == 2 and page.next_cursor


def test_cancel_and_delete(client: PrunekitClient, api: FakeApi) -> None:
    job_id = api.add_job(Plan(outcome="never"))
    assert client.cancel_job(job_id).status == "canceled"
    with pytest.raises(ConflictError) as info:
        client.cancel_job(job_id)
    assert info.value.code == "invalid_state"
    client.delete_job(job_id)
    with pytest.raises(NotFoundError):
        client.get_job(job_id)


def test_report_not_ready(client: PrunekitClient, api: FakeApi) -> None:
    job_id = api.add_job(Plan(outcome="never"))
    with pytest.raises(NotReadyError):
        client.get_report(job_id)


def test_wait_follows_progress_and_events(client: PrunekitClient, api: FakeApi) -> None:
    job_id = api.add_job(Plan(outcome="succeeded", steps=4))
    updates: list[str] = []
    messages: list[str] = []
    job = client.wait(
        job_id,
        poll_interval=0.01,
        on_update=lambda j: updates.append(f"{j.status}:{j.stage}"),
        on_event=lambda e: messages.append(e.message),
    )
    assert job.status == "succeeded"
    assert updates[0].startswith("running") and updates[-1].startswith("succeeded")
    # Every event exactly once, in order.
    assert messages == [e.message for e in api.events[job_id]]
    assert len(messages) >= 4


def test_wait_timeout_carries_the_last_state(client: PrunekitClient, api: FakeApi) -> None:
    job_id = api.add_job(Plan(outcome="never", steps=2))
    with pytest.raises(WaitTimeoutError) as info:
        client.wait(job_id, timeout=0.3, poll_interval=0.05)
    assert info.value.job is not None and info.value.job.status == "running"


def test_wait_rides_out_5xx_and_a_server_restart(fake: FakeServer, api: FakeApi) -> None:
    job_id = api.add_job(Plan(outcome="succeeded", steps=6))
    api.fail("GET", f"/v1/jobs/{job_id}", times=6, status=503)
    retries: list[str] = []
    policy = RetryPolicy(attempts=2, backoff=0.05, max_backoff=0.2)
    with PrunekitClient(fake.url, GOOD_KEY, retry=policy) as c:
        restarter = threading.Timer(0.2, fake.stop)
        restarter.start()
        starter = threading.Timer(1.5, fake.start)  # the API is away for ~1.3 s
        starter.start()
        try:
            job = c.wait(
                job_id, poll_interval=0.1, max_outage=30, on_retry=lambda exc, d: retries.append(type(exc).__name__)
            )
        finally:
            restarter.join()
            starter.join()
    assert job.status == "succeeded"
    assert "ServerError" in retries
    assert "UnreachableError" in retries


def test_wait_reports_a_short_outage_with_the_default_policy(fake: FakeServer, api: FakeApi) -> None:
    # A default policy's request retries span several seconds; they must not hide a short outage from on_retry.
    job_id = api.add_job(Plan(outcome="succeeded", steps=4))
    retries: list[str] = []
    with PrunekitClient(fake.url, GOOD_KEY) as c:
        c.get_job(job_id)
        fake.stop()
        starter = threading.Timer(0.8, fake.start)
        starter.start()
        try:
            job = c.wait(job_id, poll_interval=0.05, on_retry=lambda exc, d: retries.append(type(exc).__name__))
        finally:
            starter.join()
    assert job.status == "succeeded"
    assert retries and set(retries) == {"UnreachableError"}


def test_wait_rides_out_rate_limiting(fake: FakeServer, api: FakeApi) -> None:
    job_id = api.add_job(Plan(outcome="succeeded", steps=2))
    api.fail("GET", f"/v1/jobs/{job_id}", times=2, status=429)
    retries: list[str] = []
    with PrunekitClient(fake.url, GOOD_KEY, retry=FAST_RETRY) as c:
        job = c.wait(job_id, poll_interval=0.01, on_retry=lambda exc, d: retries.append(type(exc).__name__))
    assert job.status == "succeeded"
    assert retries == ["RateLimitedError", "RateLimitedError"]


def test_wait_gives_up_after_max_outage(dead_url: str) -> None:
    policy = RetryPolicy(attempts=1, backoff=0.01, max_backoff=0.02)
    start = time.monotonic()
    with PrunekitClient(dead_url, GOOD_KEY, retry=policy) as c, pytest.raises(UnreachableError):
        c.wait("job_x", poll_interval=0.01, max_outage=0.3)
    assert time.monotonic() - start < 5


def test_wait_stops_at_once_on_auth_error(fake: FakeServer, api: FakeApi) -> None:
    job_id = api.add_job()
    with PrunekitClient(fake.url, "bad", retry=FAST_RETRY) as c, pytest.raises(AuthError):
        c.wait(job_id, poll_interval=0.01)
    assert len(api.calls("GET", f"/v1/jobs/{job_id}")) == 1


def test_transport_can_be_injected() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer k"
        return httpx.Response(200, json=new_job("job_1", {"version": 1}).model_dump(mode="json"))

    with PrunekitClient("http://example.invalid", "k", transport=httpx.MockTransport(handler)) as c:
        assert c.get_job("job_1").status == "queued"


def test_error_without_problem_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(418, text="I'm a teapot")

    transport = httpx.MockTransport(handler)
    with PrunekitClient("http://x.invalid", transport=transport) as c, pytest.raises(RequestError) as info:
        c.get_job("job_1")
    assert info.value.status == 418 and "teapot" in str(info.value)


def test_error_with_a_foreign_json_body() -> None:
    # A proxy's or framework's own error JSON is not a problem+json body: the status's defaults fill the gaps.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    transport = httpx.MockTransport(handler)
    with PrunekitClient("http://x.invalid", transport=transport) as c, pytest.raises(NotFoundError) as info:
        c.get_job("job_1")
    assert info.value.code == "not_found" and info.value.detail == "Not Found"
    assert info.value.problem is not None and info.value.problem.status == 404


def test_problem_body_is_parsed_with_the_api_model(client: PrunekitClient, api: FakeApi) -> None:
    with pytest.raises(NotFoundError) as info:
        client.get_job("job_missing")
    problem = info.value.problem
    assert problem is not None and problem.instance == "/v1/jobs/job_missing"
    assert problem.type == "https://prunekit.dev/problems/not_found"


def test_a_body_that_is_not_a_job_is_a_server_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "job_1", "status": "exploded"})

    transport = httpx.MockTransport(handler)
    with PrunekitClient("http://x.invalid", transport=transport) as c, pytest.raises(ServerError) as info:
        c.get_job("job_1")
    assert info.value.code == "bad_response" and "Job" in info.value.detail


def test_links_are_relative_like_the_real_server(client: PrunekitClient, api: FakeApi) -> None:
    job_id = api.add_job(Plan(outcome="succeeded", steps=0))
    job = client.wait(job_id, poll_interval=0.01)
    assert job.links.self == f"/v1/jobs/{job_id}"
    assert job.links.artifact == f"/v1/jobs/{job_id}/artifact"
    assert job.links.report_html == f"/v1/jobs/{job_id}/report.html"


def test_submit_sends_metadata_only_when_given(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    file_id = _upload(client, tmp_path)
    job = client.submit_job({"version": 1}, file_id, metadata={"branch": "main", "pr": "7"})
    assert job.metadata == {"branch": "main", "pr": "7"} == api.jobs[job.id].metadata
    assert client.submit_job({"version": 1}, file_id).metadata == {}
    bodies = [json.loads(c.body) for c in api.calls("POST", "/v1/jobs")]
    # Left out when empty: a server from before metadata refuses fields it does not know.
    assert bodies[0]["metadata"] == {"branch": "main", "pr": "7"} and "metadata" not in bodies[1]


def test_list_filters_by_status_kind_and_metadata(client: PrunekitClient, api: FakeApi) -> None:
    a = api.add_job(Plan(outcome="never"), metadata={"branch": "main", "pr": "1"})
    b = api.add_job(Plan(outcome="never"), metadata={"branch": "main", "pr": "2"}, kind="sweep")
    api.add_job(Plan(outcome="never"), metadata={"branch": "dev", "pr": "1"})
    client.cancel_job(b)
    assert [j.id for j in client.list_jobs(metadata={"branch": "main"}).items] == [b, a]
    assert [j.id for j in client.iter_jobs(status=["queued", "canceled"], kind="sweep", page_size=1)] == [b]
    assert [j.id for j in client.list_jobs(status="queued", metadata={"branch": "main", "pr": "1"}).items] == [a]
    query = api.calls("GET", "/v1/jobs")[-1].query
    assert query["status"] == ["queued"] and query["meta"] == ["branch:main", "pr:1"] and "kind" not in query
