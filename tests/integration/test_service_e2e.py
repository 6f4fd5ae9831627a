"""Acceptance of the service against real processes: uvicorn, Celery workers on Redis, PostgreSQL, S3."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from jobstore.webhooks.signing import verify
from tests.integration.conftest import WEBHOOK_SECRET, Stack
from tests.support.digits import accuracy

pytestmark = pytest.mark.integration

FAST: dict[str, Any] = {
    "pruning": {"method": "magnitude", "sparsity": 0.6},
    "finetune": {"epochs": 2, "batch_size": 64},
    "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
    "seed": 0,
}


def _slow(epochs: int) -> dict[str, Any]:
    return {**FAST, "finetune": {"epochs": epochs, "batch_size": 16}}


def _submit(stack: Stack, model: Path, data: Path, spec: dict[str, Any], **form: str) -> dict[str, Any]:
    with stack.client() as c:
        r = c.post(
            "/v1/jobs",
            files={"model": (model.name, model.read_bytes()), "data": (data.name, data.read_bytes())},
            data={"spec": json.dumps(spec), **form},
        )
    assert r.status_code == 202, r.text
    job: dict[str, Any] = r.json()
    return job


def _artifacts(stack: Stack, job_id: str) -> list[str]:
    return [k for k in stack.storage_keys(f"jobs/{job_id}/") if not k.endswith((".json", ".html"))]


def test_digits_job_end_to_end(
    live_server: Stack, torchscript_model: Path, digits_npz: Path, webhook_sink: Any, tmp_path: Path
) -> None:
    url, received = webhook_sink
    secret = live_server.webhook_secret()
    job = _submit(live_server, torchscript_model, digits_npz, FAST, webhook_url=url)
    done = live_server.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", done
    assert done["percent"] == 100 and done["attempts"] == 1 and done["gate_status"] in ("passed", "gate_missed")
    assert done["started_at"] and done["finished_at"]

    with live_server.client() as c:
        report = c.get(done["links"]["report"]).json()
        r = c.get(done["links"]["artifact"])
        assert r.status_code == 200
        assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"' == f'"{done["artifact"]["sha256"]}"'
        assert "attachment" in r.headers["content-disposition"]
        part = c.get(done["links"]["artifact"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == r.content[:100]
        events = c.get(done["links"]["events"]).json()["items"]
        assert c.get(done["links"]["report_html"]).text.lower().count("<html") == 1
        metrics_text = c.get("/metrics").text
    artifact = tmp_path / done["artifact"]["name"]
    artifact.write_bytes(r.content)

    # The artifact's own sparsity and accuracy, measured here without prunekit, match the report.
    module = torch.jit.load(str(artifact)).eval()
    params = dict(module.named_parameters())
    pruned = [layer for layer in report["sparsity"]["layers"] if layer["pruned"]]
    assert pruned
    zeros = total = 0
    for layer in pruned:
        p = params[layer["name"]]
        assert int((p == 0).sum()) == layer["zeros"]
        zeros, total = zeros + int((p == 0).sum()), total + p.numel()
    assert zeros / total == pytest.approx(report["sparsity"]["global_sparsity"], abs=1e-6)
    assert report["sparsity"]["global_sparsity"] == pytest.approx(0.6, abs=0.01)
    arrays = np.load(digits_npz)
    assert accuracy(module, arrays["x_val"], arrays["y_val"]) == pytest.approx(
        report["after"]["val"]["accuracy"], abs=1e-6
    )

    # Progress reached the job record while it ran, with per-epoch metrics.
    stages = [e["stage"] for e in events if e["kind"] == "progress"]
    assert "finetune" in stages
    assert sum(1 for e in events if e["kind"] == "metric" and e["stage"] == "finetune") >= 1
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    assert len(_artifacts(live_server, job["id"])) == 1
    assert 'prunekit_stage_duration_seconds_count{stage="finetune"}' in metrics_text

    # The webhook arrives signed (Standard Webhooks) with the finished job.
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        time.sleep(0.2)
    (msg,) = received
    h = msg["headers"]
    assert verify(secret, h["webhook-id"], int(h["webhook-timestamp"]), msg["body"], h["webhook-signature"])
    # Signed with alice's own secret: neither the server's master secret nor bob's verifies it.
    for other in (WEBHOOK_SECRET, live_server.webhook_secret("bob")):
        assert not verify(other, h["webhook-id"], int(h["webhook-timestamp"]), msg["body"], h["webhook-signature"])
    payload = json.loads(msg["body"])
    assert payload["type"] == "job.succeeded" and payload["data"]["id"] == job["id"]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_model_whose_unpickling_runs_code_fails_and_runs_nothing(
    live_server: Stack, digits_npz: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state": _Exploit(marker)}, str(evil))
    # Sanity check of the test itself: plain pickle on the payload would run the command.
    with zipfile.ZipFile(evil) as zf:
        name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        assert b"system" in zf.read(name)
    job = _submit(live_server, evil, digits_npz, FAST)
    done = live_server.wait(job["id"], timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["code"] in ("unsafe_model", "invalid_model"), done["error"]
    assert len(done["error"]["message"]) > 20
    time.sleep(0.5)
    assert not marker.exists()


def test_errors_over_real_http(live_server: Stack, tmp_path: Path) -> None:
    with live_server.client() as c:
        r = c.post("/v1/jobs", files={"model": ("m.pt", b"x")}, data={"spec": "finetune: {epochs: -3}"})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "finetune.epochs"

        def chunks() -> Any:  # chunked upload without Content-Length: the cap is checked while reading
            yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big"\r\n\r\n'
            for _ in range(10 * 1024):
                yield b"\0" * 1024
            yield b"\r\n--B--\r\n"

        r = c.post("/v1/files", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=B"})
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        job = c.post("/v1/jobs", files={"model": ("m.pt", b"not a model")}, data={"spec": "{}"}).json()
    with live_server.client("bob") as bob:
        for path in ("", "/artifact", "/report", "/events"):
            r = bob.get(f"/v1/jobs/{job['id']}{path}")
            assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert bob.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
    done = live_server.wait(job["id"], timeout=120)
    assert done["status"] == "failed" and done["error"]["code"] == "invalid_model"


def test_cancel_of_a_running_job(live_server: Stack, torchscript_model: Path, digits_npz: Path) -> None:
    job = _submit(live_server, torchscript_model, digits_npz, _slow(500))
    live_server.wait(job["id"], timeout=120, until={"running"})
    with live_server.client() as c:
        deadline = time.monotonic() + 120
        while c.get(f"/v1/jobs/{job['id']}").json()["stage"] != "finetune":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        t0 = time.monotonic()
        r = c.post(f"/v1/jobs/{job['id']}/cancel")
        assert r.status_code == 202
    done = live_server.wait(job["id"], timeout=10)
    assert done["status"] == "canceled" and time.monotonic() - t0 <= 10
    assert _artifacts(live_server, job["id"]) == []


def test_kill9_of_the_worker_mid_job_redelivers_it(
    live_server: Stack, torchscript_model: Path, digits_npz: Path
) -> None:
    job = _submit(live_server, torchscript_model, digits_npz, _slow(6))
    live_server.wait(job["id"], timeout=120, until={"running"})
    with live_server.client() as c:
        deadline = time.monotonic() + 120
        while c.get(f"/v1/jobs/{job['id']}").json()["stage"] != "finetune":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    for w in live_server.workers:
        if w.alive():
            w.kill9()  # the worker, its pool process and the engine's sandbox child, all at once
    assert live_server.wait(job["id"], timeout=3, until={"running"})["status"] == "running"
    live_server.start_worker()
    done = live_server.wait(job["id"], timeout=240)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert len(_artifacts(live_server, job["id"])) == 1
    prefixes = {k.rsplit("/", 1)[0] for k in live_server.storage_keys(f"jobs/{job['id']}/")}
    assert len(prefixes) == 1
    with live_server.client() as c:
        messages = [e["message"] for e in c.get(f"/v1/jobs/{job['id']}/events").json()["items"]]
    assert any(m.startswith("requeued") for m in messages)


def test_fifty_concurrent_submissions(live_server: Stack, torchscript_model: Path, digits_npz: Path) -> None:
    # Measures the service under concurrent load, so the worker runs the engine in-process (a sandbox
    # child per job would add its start-up time 50 times; the other tests cover the sandboxed path),
    # two jobs at a time on the two cores CI has.
    live_server.stop_workers()
    loaded = live_server.start_worker(concurrency=2, PRUNEKIT_ENGINE_ISOLATE="false")
    try:
        _fifty(live_server, torchscript_model, digits_npz)
    finally:
        # Later tests expect the session's usual worker: one process, sandboxed engine.
        loaded.stop()
        live_server.workers.remove(loaded)
        live_server.start_worker()


def _fifty(live_server: Stack, torchscript_model: Path, digits_npz: Path) -> None:
    with live_server.client() as c:
        model = c.post("/v1/files", files={"file": ("m.pt", torchscript_model.read_bytes())}).json()["id"]
        data = c.post("/v1/files", files={"file": ("d.npz", digits_npz.read_bytes())}, data={"kind": "data"}).json()
    spec = {**FAST, "finetune": {"epochs": 0}, "evaluation": {"latency": {"repeats": 3, "warmup": 0}}}
    statuses: list[int] = []

    def one(i: int) -> str:
        with live_server.client(timeout=120) as c:
            r = c.post(
                "/v1/jobs", json={"spec": {**spec, "seed": i}, "model_file_id": model, "data_file_id": data["id"]}
            )
            statuses.append(r.status_code)
            job_id = r.json()["id"]
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                r = c.get(f"/v1/jobs/{job_id}")
                statuses.append(r.status_code)
                if r.json()["status"] in ("succeeded", "failed", "canceled"):
                    return str(r.json()["status"])
                time.sleep(2.0)
            return "timeout"

    with cf.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert results == ["succeeded"] * 50
    assert not [s for s in statuses if s >= 500]
    assert statuses.count(202) == 50
