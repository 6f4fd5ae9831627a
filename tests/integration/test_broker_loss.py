"""Redis losing its data (restart without persistence, FLUSHALL) loses no queued job and no pending webhook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack, _delete_redis_keys
from tests.service.support import wait_for

pytestmark = pytest.mark.integration

QUICK: dict[str, Any] = {
    "pruning": {"method": "magnitude", "sparsity": 0.5},
    "finetune": {"epochs": 0},
    "evaluation": {"latency": {"repeats": 3, "warmup": 0}},
    "seed": 0,
}


def _upload(stack: Stack, path: Path, kind: str) -> str:
    with stack.client() as c:
        r = c.post("/v1/files", files={"file": (path.name, path.read_bytes())}, data={"kind": kind})
    assert r.status_code == 201, r.text
    file_id: str = r.json()["id"]
    return file_id


def _submit(stack: Stack, model: str, data: str, **extra: Any) -> str:
    with stack.client() as c:
        r = c.post("/v1/jobs", json={"spec": QUICK, "model_file_id": model, "data_file_id": data, **extra})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def _messages(stack: Stack, job_id: str) -> list[str]:
    with stack.client() as c:
        return [e["message"] for e in c.get(f"/v1/jobs/{job_id}/events").json()["items"]]


def test_jobs_and_webhooks_queued_before_redis_lost_its_data_still_complete(
    live_server: Stack, torchscript_model: Path, digits_npz: Path, webhook_sink: Any
) -> None:
    url, received = webhook_sink
    model, data = _upload(live_server, torchscript_model, "model"), _upload(live_server, digits_npz, "data")
    live_server.stop_workers()
    try:
        jobs = [_submit(live_server, model, data) for _ in range(2)]
        live_server.webhook_secret()  # webhooks need the key's own secret
        hooked = _submit(live_server, model, data, webhook_url=url)
        with live_server.client() as c:  # canceled while queued: its webhook message is queued too
            assert c.post(f"/v1/jobs/{hooked}/cancel").json()["status"] == "canceled"
        # FLUSHALL, limited to this session's keys: other test sessions may share this Redis database.
        _delete_redis_keys(live_server.env["PRUNEKIT_BROKER_KEY_PREFIX"])
        live_server.start_worker(
            PRUNEKIT_REQUEUE_STALE_AFTER="2", PRUNEKIT_WEBHOOK_MAX_ATTEMPTS="2", PRUNEKIT_WEBHOOK_TIMEOUT="2"
        )
        for job_id in jobs:
            done = live_server.wait(job_id, timeout=180)
            assert done["status"] == "succeeded" and done["attempts"] == 1, done
        wait_for(lambda: len(received) >= 1, 60, "the webhook of the canceled job")
        assert json.loads(received[0]["body"])["data"]["id"] == hooked
        wait_for(lambda: "webhook delivered" in " ".join(_messages(live_server, hooked)), 30, "the delivery event")
        assert any(m.startswith("webhook sent again") for m in _messages(live_server, hooked))
    finally:
        # Later tests expect the session's usual worker.
        live_server.stop_workers()
        live_server.workers.clear()
        live_server.start_worker()
