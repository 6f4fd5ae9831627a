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


# Chromium with no way out but loopback: every host name fails to resolve and anything else goes to a dead proxy
# (Chromium never proxies loopback), so a page that needs a CDN breaks as it would on an offline machine.
OFFLINE_FLAGS = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=http://127.0.0.1:9")


@contextlib.contextmanager
def chromium(*extra_flags: str) -> Iterator[Any]:
    """Headless Chromium (selenium) with its own profile; `extra_flags` are appended to the usual ones."""
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
        *extra_flags,
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


@pytest.fixture(scope="session")
def driver() -> Iterator[Any]:
    with chromium() as drv:
        yield drv


@pytest.fixture(scope="session")
def offline_driver() -> Iterator[Any]:
    """Chromium that reaches 127.0.0.1 and nothing else (OFFLINE_FLAGS)."""
    with chromium(*OFFLINE_FLAGS) as drv:
        yield drv


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a thread; yields the base URL."""
    import uvicorn

    from tests.service.support import free_port, wait_for

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


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
