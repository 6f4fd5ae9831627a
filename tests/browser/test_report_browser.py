"""The HTML report of a sweep in real headless Chromium: no console errors, plots rendered, screenshot kept."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest

from prunekit.reporting import render_jobs_page, render_report_html
from tests.browser.conftest import ARTIFACTS, serve_folder, severe_logs

pytestmark = pytest.mark.browser

PLOTS = ["plot-accuracy", "plot-history", "plot-layers", "plot-pareto"]


@pytest.fixture(scope="module")
def site(sweep_report: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The rendered pages, served from 127.0.0.1 as the API would serve them."""
    root = tmp_path_factory.mktemp("site")
    (root / "report.html").write_text(render_report_html(sweep_report, "job_sweep"), encoding="utf-8")
    jobs = [
        {
            "id": "job_sweep",
            "status": "succeeded",
            "kind": "sweep",
            "gate_status": "passed",
            "links": {"report_html": "report.html"},
        },
        {"id": "job_next", "status": "running", "stage": "finetune", "percent": 40.0, "kind": "compress"},
    ]
    (root / "jobs.html").write_text(render_jobs_page(jobs), encoding="utf-8")
    with serve_folder(root) as base:
        yield base


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_sweep_report_renders_its_plots(driver: Any, site: str) -> None:
    driver.get_log("browser")  # start from an empty log
    driver.get(f"{site}/report.html")
    assert driver.execute_script("return document.readyState") == "complete"
    assert severe_logs(driver) == []
    # Nothing but the page itself was fetched: no fonts, scripts, images or styles from anywhere.
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []
    for plot_id in PLOTS:
        box = driver.execute_script(
            "const s = document.querySelector(arguments[0] + ' svg'); if (!s) return null;"
            "const r = s.getBoundingClientRect(); const b = s.getBBox();"
            "return {w: r.width, h: r.height, bw: b.width, bh: b.height, shapes: s.querySelectorAll('path').length,"
            " texts: s.querySelectorAll('text').length};",
            f"#{plot_id}",
        )
        assert box is not None, f"{plot_id} has no svg"
        assert box["w"] > 300 and box["h"] > 150, (plot_id, box)
        assert box["bw"] > 100 and box["bh"] > 100, (plot_id, box)  # the drawing itself has extent
        assert box["shapes"] > 5 and box["texts"] > 3, (plot_id, box)
    title = driver.execute_script("return document.title")
    assert "sweep" in title

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, min(height + 120, 16000))
    path = ARTIFACTS / "sweep-report.png"
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    width, shot_height = _png_size(data)
    assert width >= 1000 and shot_height >= 2000
    assert len(data) > 100_000  # a blank or near-blank page compresses to far less

    pareto = driver.find_element("css selector", "#plot-pareto")
    pareto_png = pareto.screenshot_as_png
    (ARTIFACTS / "sweep-report-pareto.png").write_bytes(pareto_png)
    w, h = _png_size(pareto_png)
    assert w > 400 and h > 250
    _assert_not_blank(pareto_png)
    assert severe_logs(driver) == []


def _assert_not_blank(png: bytes) -> None:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").resize((200, 120))
    colors = image.getcolors(maxcolors=200 * 120) or []
    assert len(colors) > 20, "the plot screenshot is (nearly) one colour"


def test_jobs_page_loads_cleanly(driver: Any, site: str) -> None:
    driver.set_window_size(1280, 900)
    driver.get_log("browser")
    driver.get(f"{site}/jobs.html")
    assert severe_logs(driver) == []
    links = driver.execute_script("return [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    assert "report.html" in links
    driver.save_screenshot(str(ARTIFACTS / "jobs-page.png"))
