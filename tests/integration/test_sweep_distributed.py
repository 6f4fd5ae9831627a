"""Sweeps share their trials between workers: each trial is a row any worker claims (issue 4)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import create_engine, text

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {
    "kind": "sweep",
    "pruning": {"method": "magnitude", "sparsity": 0.5},
    "finetune": {"epochs": 1, "batch_size": 64},
    "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
    "seed": 0,
}


def _sweep(sparsities: list[float]) -> dict[str, Any]:
    return {**BASE, "sweep": {"sparsities": sparsities, "regularizers": {"none": {}, "l2": {"l2": 1e-4}}}}


def _submit(stack: Stack, model: Path, data: Path, spec: dict[str, Any]) -> str:
    with stack.client() as c:
        r = c.post(
            "/v1/jobs",
            files={"model": (model.name, model.read_bytes()), "data": (data.name, data.read_bytes())},
            data={"spec": json.dumps(spec)},
        )
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def _trials(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    engine = create_engine(stack.env["PRUNEKIT_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT idx, name, status, worker, attempts, result_key FROM job_trials WHERE job_id = :j"),
                {"j": job_id},
            ).mappings()
            return sorted((dict(r) for r in rows), key=lambda r: r["idx"])
    finally:
        engine.dispose()


@pytest.fixture()
def second_worker(live_server: Stack) -> Iterator[None]:
    w = live_server.start_worker()
    try:
        yield
    finally:
        w.stop()
        live_server.workers.remove(w)


def test_sweep_completes_on_one_worker(live_server: Stack, torchscript_model: Path, digits_npz: Path) -> None:
    """One worker of concurrency 1: the job's own task runs every trial, the extra messages do nothing."""
    job_id = _submit(live_server, torchscript_model, digits_npz, _sweep([0.5]))
    done = live_server.wait(job_id, timeout=180)
    assert done["status"] == "succeeded", done
    trials = _trials(live_server, job_id)
    assert [t["status"] for t in trials] == ["done", "done"]
    assert len({t["worker"] for t in trials}) == 1


def test_sweep_trials_run_on_two_workers(
    live_server: Stack, second_worker: None, torchscript_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    job_id = _submit(live_server, torchscript_model, digits_npz, _sweep([0.5, 0.8]))
    done = live_server.wait(job_id, timeout=240)
    assert done["status"] == "succeeded", done
    assert done["percent"] == 100

    trials = _trials(live_server, job_id)
    assert [t["status"] for t in trials] == ["done"] * 4, trials
    workers = {t["worker"] for t in trials}
    assert len(workers) >= 2, f"every trial ran on one process: {trials}"

    with live_server.client() as c:
        report = c.get(done["links"]["report"]).json()
        r = c.get(done["links"]["artifact"])
        assert r.status_code == 200
        events = [e["message"] for e in c.get(done["links"]["events"]).json()["items"]]
    assert len(report["trials"]) == 4
    assert {t["name"] for t in report["trials"]} == {t["name"] for t in trials}
    assert any(t.get("pareto") for t in report["trials"]), report["trials"]
    assert sum("trial " in m and " done on " in m for m in events) == 4
    artifact = tmp_path / done["artifact"]["name"]
    artifact.write_bytes(r.content)
    torch.jit.load(str(artifact))
    # Trial results are intermediate: once published, the job keeps exactly one artifact and report.
    keys = live_server.storage_keys(f"jobs/{job_id}/")
    assert not [k for k in keys if "/trials/" in k], keys


def test_cancel_stops_the_trials_on_every_worker(
    live_server: Stack, second_worker: None, torchscript_model: Path, digits_npz: Path
) -> None:
    spec = {**_sweep([0.5, 0.8]), "finetune": {"epochs": 500, "batch_size": 16}}
    job_id = _submit(live_server, torchscript_model, digits_npz, spec)
    deadline = time.monotonic() + 120
    while len({t["worker"] for t in _trials(live_server, job_id) if t["status"] == "running"}) < 2:
        assert time.monotonic() < deadline, _trials(live_server, job_id)
        time.sleep(0.3)
    with live_server.client() as c:
        assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    assert live_server.wait(job_id, timeout=20)["status"] == "canceled"
    # Both workers give their trial back within a few heartbeats; nothing is left running.
    deadline = time.monotonic() + 20
    while any(t["status"] == "running" for t in _trials(live_server, job_id)):
        assert time.monotonic() < deadline, _trials(live_server, job_id)
        time.sleep(0.3)
    assert all(t["status"] == "pending" for t in _trials(live_server, job_id))
