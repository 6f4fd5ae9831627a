"""report.html is the page the worker stored; the API renders one only when none was stored (real DB, storage)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from jobstore.db import utcnow
from jobstore.repositories import jobs as repo
from prunekit.reporting.samples import compress_report
from prunekit.spec.api import JobStatus
from service.core.state import AppState
from tests.service.conftest import submit

STORED_PAGE = "<!doctype html><html><body>stored by the worker</body></html>"


def _succeeded(client: TestClient, state: AppState, tmp_path: Path, with_html: bool) -> str:
    job_id: str = submit(client)["id"]
    prefix = f"jobs/{job_id}/a1-test/"
    (tmp_path / "report.json").write_text(json.dumps(compress_report()))
    (tmp_path / "report.html").write_text(STORED_PAGE)
    state.storage.put_file(prefix + "report.json", tmp_path / "report.json")
    values = {"report_key": prefix + "report.json"}
    if with_html:
        state.storage.put_file(prefix + "report.html", tmp_path / "report.html")
        values["report_html_key"] = prefix + "report.html"
    with state.db.session() as s:
        assert repo.claim(s, job_id, "w1", utcnow(), timedelta(seconds=30), 3)
    with state.db.session() as s:
        assert repo.finish(s, job_id, "w1", JobStatus.SUCCEEDED, utcnow(), **values) == JobStatus.SUCCEEDED
    return job_id


def test_the_stored_page_is_served_as_stored(client: TestClient, state: AppState, tmp_path: Path) -> None:
    job_id = _succeeded(client, state, tmp_path, with_html=True)
    r = client.get(f"/v1/jobs/{job_id}/report.html")
    assert r.status_code == 200 and r.text == STORED_PAGE and r.headers["content-type"].startswith("text/html")


def test_a_job_without_a_stored_page_gets_one_rendered(client: TestClient, state: AppState, tmp_path: Path) -> None:
    job_id = _succeeded(client, state, tmp_path, with_html=False)
    r = client.get(f"/v1/jobs/{job_id}/report.html")
    assert r.status_code == 200 and "stored by the worker" not in r.text and job_id in r.text
    assert r.text.lower().count("<html") == 1


def test_a_stored_page_gone_missing_is_rendered_again(client: TestClient, state: AppState, tmp_path: Path) -> None:
    job_id = _succeeded(client, state, tmp_path, with_html=True)
    state.storage.delete(f"jobs/{job_id}/a1-test/report.html")
    r = client.get(f"/v1/jobs/{job_id}/report.html")
    assert r.status_code == 200 and job_id in r.text and "stored by the worker" not in r.text
