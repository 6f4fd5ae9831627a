"""A dry-run job through the API and the real worker code (issue 11): accepted as a kind, run by the engine, and
finished with a report (JSON and HTML) but no artifact."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from safetensors.torch import save

from service.core.state import AppState
from tests.service.conftest import upload
from worker.context import WorkerContext
from worker.engine.models.builtin import DigitsCNN
from worker.runner import execute_job

MODEL = {"architecture": "prunekit/digits_cnn", "kwargs": {"width": 4}, "input_shape": [1, 8, 8]}


def _submit_dry_run(client: TestClient, spec: dict[str, Any]) -> str:
    weights = save({k: v.contiguous() for k, v in DigitsCNN(width=4).state_dict().items()})
    model = upload(client, weights, name="digits.safetensors")
    r = client.post("/v1/jobs", json={"spec": {**spec, "kind": "dry_run"}, "model_file_id": model["id"]})
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "dry_run"
    return str(r.json()["id"])


def _run(state: AppState, job_id: str) -> str:
    settings = state.settings.model_copy(update={"engine_isolate": False})
    return execute_job(WorkerContext(settings, state.db, state.storage, state.broker), job_id)


def test_dry_run_job_reports_the_plan_without_an_artifact(client: TestClient, state: AppState) -> None:
    job_id = _submit_dry_run(client, {"model": MODEL, "pruning": {"method": "structural", "channel_sparsity": 0.5}})
    _run(state, job_id)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["gate_status"], job["artifact"]) == ("succeeded", "passed", None)
    assert job["links"]["artifact"] is None
    report = client.get(job["links"]["report"]).json()
    dry = report["dry_run"]
    assert report["kind"] == "dry_run" and dry["problems"] == [] and dry["format"] == "state_dict"
    assert dry["expected"]["macs_after"] < dry["expected"]["macs_before"]
    assert {row["name"] for row in dry["prunable"]} >= {"features.0", "features.3"}
    html = client.get(job["links"]["report_html"]).text
    assert 'id="dry-run"' in html and "No problems found." in html
    listed = client.get("/v1/jobs", params={"kind": "dry_run"}).json()["items"]
    assert [j["id"] for j in listed] == [job_id]


def test_dry_run_job_with_problems_still_succeeds_and_lists_them(client: TestClient, state: AppState) -> None:
    job_id = _submit_dry_run(client, {"model": {k: v for k, v in MODEL.items() if k != "input_shape"}})
    _run(state, job_id)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    problems = client.get(job["links"]["report"]).json()["dry_run"]["problems"]
    assert [p["code"] for p in problems] == ["missing_inputs"]
    html = client.get(job["links"]["report_html"]).text
    assert "Problems (1)" in html and "model.input_shape is required" in html
