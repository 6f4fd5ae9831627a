"""Webhook event filters per job, the delivery log of each attempt and the redeliver call (real receiver, the
real Celery task run in-process, real database)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient

from jobstore import lifecycle
from jobstore.queue import WEBHOOK_TASK, create_celery
from jobstore.repositories import jobs as repo
from jobstore.settings import Settings
from prunekit.reporting.samples import compress_report
from service.core.state import AppState
from tests.service import test_webhooks
from tests.service.conftest import complete_job, submit, upload

receiver = test_webhooks.receiver  # the webhook receiver fixture (a real HTTP server), shared with those tests


@pytest.fixture()
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_max_attempts": 1})  # one attempt per task: no retry chains


@pytest.fixture()
def celery_app(settings: Settings) -> Iterator[Celery]:
    import worker.tasks  # registers the tasks

    # The worker keeps one context per process; this test's database is not the previous test's.
    worker.tasks._contexts.clear()
    app = create_celery(settings)
    try:
        yield app
    finally:
        app.close()
        for ctx in worker.tasks._contexts.values():
            ctx.db.dispose()
        worker.tasks._contexts.clear()


def _deliver(celery_app: Celery, job_id: str) -> Any:
    """Run the worker's webhook task once, in this process, as a worker would on the job's message."""
    return celery_app.tasks[WEBHOOK_TASK].apply(args=[job_id]).get()


def _deliveries(client: TestClient, job_id: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}/webhook-deliveries", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_each_attempt_is_logged_and_redeliver_sends_it_again(
    client: TestClient, state: AppState, celery_app: Celery, receiver: Any
) -> None:
    url, rec = receiver
    job_id = submit(client, webhook_url=url)["id"]
    assert _deliveries(client, job_id) == {"items": [], "next_cursor": None}
    client.post(f"/v1/jobs/{job_id}/cancel")
    rec.status = 500
    assert _deliver(celery_app, job_id) == "failed"
    rec.status = 204
    before = state.broker.queue_depths()["cpu"]
    r = client.post(f"/v1/jobs/{job_id}/webhook-deliveries/redeliver")
    assert r.status_code == 202, r.text
    assert r.json() == {
        "job_id": job_id,
        "event_type": "job.canceled",
        "message_id": f"msg_{job_id}_canceled",
        "webhook_state": "pending",
    }
    assert state.broker.queue_depths()["cpu"] == before + 1
    assert _deliver(celery_app, job_id) == "delivered"

    log = _deliveries(client, job_id)["items"]
    assert [(d["ok"], d["status_code"], d["error"]) for d in log] == [(False, 500, "HTTP 500"), (True, 204, None)]
    assert {d["event_type"] for d in log} == {"job.canceled"} and {d["attempt"] for d in log} == {1}
    assert all(d["message_id"] == f"msg_{job_id}_canceled" and d["duration_ms"] >= 0 for d in log)
    assert log[0]["created_at"] <= log[1]["created_at"]
    ids = [m["headers"].get("webhook-id") or m["headers"].get("Webhook-Id") for m in rec.received]
    assert ids == [f"msg_{job_id}_canceled"] * 2  # the same message: receivers dedupe on it
    with state.db.session() as s:
        assert repo.get_job_any(s, job_id).webhook_state == "delivered"
    # One list shape: pages follow next_cursor.
    page = _deliveries(client, job_id, limit=1)
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = _deliveries(client, job_id, limit=1, cursor=page["next_cursor"])
    assert [d["id"] for d in rest["items"]] == [log[1]["id"]] and rest["next_cursor"] is None


def test_an_unreachable_receiver_is_logged_without_a_status(
    client: TestClient, celery_app: Celery, receiver: Any
) -> None:
    job_id = submit(client, webhook_url="http://127.0.0.1:9/hook")["id"]  # discard port: nothing listens
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert _deliver(celery_app, job_id) == "failed"
    (entry,) = _deliveries(client, job_id)["items"]
    assert entry["ok"] is False and entry["status_code"] is None and entry["error"].startswith("ConnectError")


def test_redeliver_is_refused_unless_the_job_ended_with_a_webhook(client: TestClient, receiver: Any) -> None:
    url, _ = receiver
    running = submit(client, webhook_url=url)["id"]
    r = client.post(f"/v1/jobs/{running}/webhook-deliveries/redeliver")
    assert r.status_code == 409 and r.json()["code"] == "invalid_state" and "queued" in r.json()["detail"]
    plain = submit(client)["id"]
    client.post(f"/v1/jobs/{plain}/cancel")
    r = client.post(f"/v1/jobs/{plain}/webhook-deliveries/redeliver")
    assert r.status_code == 409 and "no webhook_url" in r.json()["detail"]


def test_bob_cannot_see_or_redeliver_alices_webhooks(client: TestClient, bob: TestClient, receiver: Any) -> None:
    job_id = submit(client, webhook_url=receiver[0])["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert bob.get(f"/v1/jobs/{job_id}/webhook-deliveries").status_code == 404
    assert bob.post(f"/v1/jobs/{job_id}/webhook-deliveries/redeliver").status_code == 404


def test_the_event_filter_decides_which_ends_are_sent(client: TestClient, state: AppState, receiver: Any) -> None:
    url, _ = receiver
    only_success = submit(client, webhook_url=url, webhook_events=["job.succeeded"])["id"]
    before = state.broker.queue_depths()["cpu"]
    client.post(f"/v1/jobs/{only_success}/cancel")
    assert state.broker.queue_depths()["cpu"] == before  # canceled is filtered out: nothing queued
    with state.db.session() as s:
        job = repo.get_job_any(s, only_success)
        assert job.webhook_state is None and job.webhook_events == ["job.succeeded"]
    r = client.post(f"/v1/jobs/{only_success}/webhook-deliveries/redeliver")
    assert r.status_code == 409 and "webhook_events" in r.json()["detail"]

    # job.gate_missed picks the successes that missed a gate, and only those.
    for gate_missed, sent in ((True, True), (False, False)):
        job_id = submit(client, webhook_url=url, webhook_events=["job.gate_missed", "job.failed"])["id"]
        complete_job(state, job_id, b"artifact", compress_report(gate_missed=gate_missed))
        with state.db.session() as s:
            assert lifecycle.notify(s, state.broker, job_id) is sent


@pytest.mark.parametrize(
    ("extra", "loc"),
    [
        ({"webhook_events": ["job.succeeded"]}, "webhook_events"),  # without a webhook_url
        ({"webhook_url": "URL", "webhook_events": []}, "webhook_events"),
        ({"webhook_url": "URL", "webhook_events": ["job.exploded"]}, "webhook_events.0"),
    ],
)
def test_bad_event_filters_are_refused(client: TestClient, receiver: Any, extra: dict[str, Any], loc: str) -> None:
    if extra.get("webhook_url"):
        client.post("/v1/webhook-secret/rotate")
        extra = {**extra, "webhook_url": receiver[0]}
    model = upload(client)
    r = client.post("/v1/jobs", json={"spec": {"pruning": {"sparsity": 0.5}}, "model_file_id": model["id"], **extra})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == loc


def test_multipart_takes_the_filter_comma_separated(client: TestClient, state: AppState, receiver: Any) -> None:
    client.post("/v1/webhook-secret/rotate")
    form = {
        "spec": json.dumps({"pruning": {"sparsity": 0.5}}),
        "webhook_url": receiver[0],
        "webhook_events": "job.failed, job.canceled",
    }
    r = client.post("/v1/jobs", data=form, files={"model": ("m.pt", b"model")})
    assert r.status_code == 202, r.text
    with state.db.session() as s:
        assert repo.get_job_any(s, r.json()["id"]).webhook_events == ["job.failed", "job.canceled"]
    form["webhook_events"] = "job.failed,nope"
    r = client.post("/v1/jobs", data=form, files={"model": ("m.pt", b"model")})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"].startswith("webhook_events")
