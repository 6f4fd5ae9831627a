"""Browser-test fixtures: a real sweep report from the engine, and headless Debian Chromium."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from prunekit.spec import JobSpec

CHROMIUM = os.environ.get("PRUNEKIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PRUNEKIT_CHROMEDRIVER", "/usr/bin/chromedriver")
# Screenshots kept as test artifacts (CI uploads the folder).
ARTIFACTS = Path(os.environ.get("PRUNEKIT_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    """Serve `root` over HTTP on 127.0.0.1 (pages load as the API would serve them); yields the base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def sweep_report(torchscript_model: Path, digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The report of a real (small) sweep job run by the engine on digits."""
    from worker.engine.api import JobInputs, run_job

    spec = JobSpec.model_validate(
        {
            "kind": "sweep",
            "pruning": {"method": "magnitude", "sparsity": 0.5},
            "finetune": {"epochs": 2, "batch_size": 128},
            "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
            "sweep": {"sparsities": [0.5, 0.9, 0.97], "regularizers": {"none": {}, "l2": {"l2": 1e-4}}},
        }
    )
    out = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path_factory.mktemp("sweep"), isolate=False)
    return out.report.model_dump(mode="json")


@pytest.fixture(scope="session")
def driver() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        # Failing, not skipping: scripts/services.sh installs them, and a skipped browser test proves nothing.
        pytest.fail(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="prunekit-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def severe_logs(drv: Any) -> list[dict[str, Any]]:
    """Console entries at SEVERE level since the last call (reading the log empties it)."""
    return [entry for entry in drv.get_log("browser") if entry.get("level") == "SEVERE"]


def click_and_wait(drv: Any, css: str, timeout: float = 20.0) -> None:
    """Click the element at `css` and wait until the page it leads to has loaded.

    A click that submits a form or follows a link returns before the browser has navigated;
    reading the page right after it races the navigation (seen in CI after a logout redirect).
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    old_root = drv.find_element(By.TAG_NAME, "html")
    drv.find_element(By.CSS_SELECTOR, css).click()
    wait = WebDriverWait(drv, timeout)
    wait.until(ec.staleness_of(old_root))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
