"""/docs and /redoc render in headless Chromium that can reach nothing but the server (no CDN)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from jobstore.settings import Settings
from service.app import create_app
from tests.browser.conftest import ARTIFACTS, serve_app, severe_logs

pytestmark = pytest.mark.browser

REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("docs-api")
    settings = Settings(
        database_url=f"sqlite:///{root}/prunekit.db", storage_dir=root / "storage", broker_dir=root / "broker"
    )
    with serve_app(create_app(settings)) as url:
        yield url


def _wait_for(drv: Any, css: str, timeout: float = 30.0) -> list[Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(drv, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))
    return list(drv.find_elements(By.CSS_SELECTOR, css))


def _outside_requests(drv: Any, base: str) -> list[str]:
    names = drv.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not n.startswith(base)]


def _refused_logo(entry: dict[str, Any]) -> bool:
    return REDOC_LOGO in entry["message"] and "Content Security Policy" in entry["message"]


def test_the_browser_really_is_offline(offline_driver: Any) -> None:
    # FastAPI's stock page takes Swagger UI from a CDN: in this browser its script must fail to load.
    with serve_app(FastAPI()) as stock:
        offline_driver.get(f"{stock}/docs")
        assert offline_driver.execute_script("return typeof SwaggerUIBundle") == "undefined"
    assert any("cdn.jsdelivr.net" in e["message"] for e in severe_logs(offline_driver))


def test_swagger_ui_renders_the_operations_offline(offline_driver: Any, base: str) -> None:
    offline_driver.get(f"{base}/docs")
    operations = _wait_for(offline_driver, ".opblock")
    assert any("/v1/jobs" in op.text for op in operations), [op.text for op in operations[:5]]
    assert _outside_requests(offline_driver, base) == []
    assert severe_logs(offline_driver) == []  # a CSP refusal would be logged here
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    offline_driver.save_screenshot(str(ARTIFACTS / "docs-offline.png"))


def test_redoc_renders_the_operations_offline(offline_driver: Any, base: str) -> None:
    offline_driver.get(f"{base}/redoc")
    operations = _wait_for(offline_driver, "[data-section-id^='operation/']")
    assert len(operations) > 5
    # ReDoc's "API docs by Redocly" badge is the one image it takes from its CDN (and hides when that fails):
    # the docs CSP refuses it, so even that request never leaves the browser.
    assert set(_outside_requests(offline_driver, base)) <= {REDOC_LOGO}
    assert [e for e in severe_logs(offline_driver) if not _refused_logo(e)] == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    offline_driver.save_screenshot(str(ARTIFACTS / "redoc-offline.png"))
