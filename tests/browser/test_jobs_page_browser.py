"""The jobs page in real headless Chromium: sign in with a key, open a report, page through jobs, read failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from jobstore.db import utcnow
from jobstore.repositories import jobs as jobs_repo
from jobstore.settings import Settings
from prunekit.spec.api import JobStatus
from service.app import create_app
from service.core.state import AppState
from service.ui import service as ui_service
from tests.browser.conftest import ARTIFACTS, click_and_wait, serve_app, severe_logs
from tests.service.conftest import complete_job
from tests.service.support import free_port

pytestmark = pytest.mark.browser

KEY = "browser-test-key-3f1c"


@pytest.fixture(scope="module")
def api(sweep_report: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The real API (uvicorn, SQLite, local storage, auth on) holding one succeeded sweep job of alice's."""
    root = tmp_path_factory.mktemp("api")
    settings = Settings(
        database_url=f"sqlite:///{root}/prunekit.db",
        storage_dir=root / "storage",
        broker_dir=root / "broker",
        api_keys=SecretStr(f"alice:{KEY}"),
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as c:
        model = c.post("/v1/files", files={"file": ("m.pt", b"model")}, data={"kind": "model"}).json()
        spec = {"kind": "sweep", "pruning": {"method": "magnitude", "sparsity": 0.5}, "sweep": {"sparsities": [0.5]}}
        job = c.post("/v1/jobs", json={"spec": spec, "model_file_id": model["id"]}).json()
    state: AppState = app.state.prunekit
    complete_job(state, job["id"], b"artifact-bytes", sweep_report)
    try:
        yield base, job["id"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_sign_in_then_open_a_report_from_the_jobs_page(driver: Any, api: tuple[str, str]) -> None:
    from selenium.webdriver.common.by import By

    base, job_id = api
    driver.delete_all_cookies()
    driver.get(f"{base}/ui")
    assert driver.find_elements(By.CSS_SELECTOR, "form[action='/ui/login']"), driver.page_source[:500]
    severe_logs(driver)  # the 401 of the sign-in page itself is logged by Chromium; only what follows counts

    driver.find_element(By.ID, "api_key").send_keys("wrong-key")
    click_and_wait(driver, "button[type='submit']")
    assert "unknown API key" in driver.find_element(By.CSS_SELECTOR, ".error").text
    severe_logs(driver)

    driver.find_element(By.ID, "api_key").send_keys(KEY)
    click_and_wait(driver, "button[type='submit']")
    assert driver.current_url == f"{base}/ui"
    assert job_id in driver.page_source and "signed in as" in driver.page_source
    cookie = driver.get_cookie("prunekit_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert driver.execute_script("return document.cookie") == ""  # not readable from scripts
    assert severe_logs(driver) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "jobs-page-signed-in.png"))

    click_and_wait(driver, "a[href$='/report.html']")
    assert driver.current_url == f"{base}/v1/jobs/{job_id}/report.html"
    plots = driver.find_elements(By.CSS_SELECTOR, "[id^='plot-'] svg")
    assert len(plots) >= 4 and all(p.size["width"] > 0 and p.size["height"] > 0 for p in plots), len(plots)
    assert severe_logs(driver) == []

    driver.get(f"{base}/ui")
    click_and_wait(driver, "form[action='/ui/logout'] button")
    assert driver.find_elements(By.CSS_SELECTOR, "form[action='/ui/login']")
    assert driver.get_cookie("prunekit_session") is None


LONG_MESSAGE = (
    "the model's forward() raised while tracing: " + "".join(f"shape mismatch in conv{i}; " for i in range(40)) + "END"
)


@pytest.fixture(scope="module")
def paged_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The real API (auth off) with pages of 3 jobs holding 4 jobs, the newest failed with a long message."""
    root = tmp_path_factory.mktemp("paged")
    settings = Settings(
        database_url=f"sqlite:///{root}/prunekit.db",
        storage_dir=root / "storage",
        broker_dir=root / "broker",
        auth_disabled=True,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ui_service, "PAGE_SIZE", 3)
        app = create_app(settings)
        with serve_app(app) as base:
            with httpx.Client(base_url=base) as c:
                model = c.post("/v1/files", files={"file": ("m.pt", b"model")}, data={"kind": "model"}).json()
                spec = {"pruning": {"method": "magnitude", "sparsity": 0.5}}
                ids = [
                    c.post("/v1/jobs", json={"spec": spec, "model_file_id": model["id"]}).json()["id"] for _ in "abcd"
                ]
            state: AppState = app.state.prunekit
            with state.db.session() as s:
                assert jobs_repo.claim(s, ids[-1], "t", utcnow(), timedelta(seconds=30), 3)
                jobs_repo.finish(
                    s, ids[-1], "t", JobStatus.FAILED, utcnow(), error_code="invalid_model", error_message=LONG_MESSAGE
                )
            yield base, ids[-1]


def test_a_long_failure_stays_one_row_and_older_jobs_are_a_click_away(driver: Any, paged_api: tuple[str, str]) -> None:
    from selenium.webdriver.common.by import By

    base, failed_id = paged_api
    severe_logs(driver)  # what earlier tests left (the signed-out page's 401) does not count
    driver.get(f"{base}/ui")
    rows = driver.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 3 and failed_id in rows[0].text
    details = rows[0].find_element(By.TAG_NAME, "details")
    assert details.get_attribute("open") is None and "END" not in rows[0].text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "jobs-page-failure.png"))
    assert rows[0].size["height"] < 120, rows[0].size  # the message does not blow up the table
    details.find_element(By.TAG_NAME, "summary").click()
    assert details.get_attribute("open") is not None and "END" in rows[0].text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "jobs-page-failure-expanded.png"))
    first_page = [r.text.split()[0] for r in rows]

    click_and_wait(driver, "a[rel='next']")
    assert "before=" in driver.current_url
    assert len(driver.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1
    assert not driver.find_elements(By.CSS_SELECTOR, "a[rel='next']")
    click_and_wait(driver, "a[rel='prev']")
    assert [r.text.split()[0] for r in driver.find_elements(By.CSS_SELECTOR, "tbody tr")] == first_page
    assert severe_logs(driver) == []
