"""A sweep with several seeds per grid point, in real headless Chromium: the error-banded plots render."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prunekit.reporting import render_report_html
from prunekit.spec import JobSpec
from tests.browser.conftest import ARTIFACTS, serve_folder, severe_logs

pytestmark = pytest.mark.browser

BAND_PLOTS = ["plot-sweep-accuracy", "plot-sweep-gap"]
_BANDS_JS = """
const svg = document.querySelector(arguments[0] + ' svg');
if (!svg) return null;
const r = svg.getBoundingClientRect();
const bands = [...svg.querySelectorAll('[id*="PolyCollection"] use')].map(p => {
  const b = p.getBBox();
  return {w: b.width, h: b.height, opacity: parseFloat(getComputedStyle(p).fillOpacity)};
});
return {w: r.width, h: r.height, bands: bands, texts: [...svg.querySelectorAll('text')].map(t => t.textContent)};
"""


@pytest.fixture(scope="module")
def seeded_site(torchscript_model: Path, digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """report.html of a real small sweep (2 sparsities x 2 regularizers x 2 seeds), served from 127.0.0.1."""
    from worker.engine.api import JobInputs, run_job

    spec = JobSpec.model_validate(
        {
            "kind": "sweep",
            "pruning": {"method": "magnitude", "sparsity": 0.5},
            "finetune": {"epochs": 1, "batch_size": 128},
            "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
            "sweep": {"sparsities": [0.5, 0.95], "regularizers": {"none": {}, "l2": {"l2": 1e-4}}, "seeds": 2},
        }
    )
    out = run_job(JobInputs(torchscript_model, spec, digits_npz), tmp_path_factory.mktemp("seeded"), isolate=False)
    root = tmp_path_factory.mktemp("seeded-site")
    page = render_report_html(out.report.model_dump(mode="json"), "job_seeded")
    (root / "report.html").write_text(page, encoding="utf-8")
    with serve_folder(root) as base:
        yield base


def test_banded_sweep_plots_render(driver: Any, seeded_site: str) -> None:
    driver.set_window_size(1280, 900)
    driver.get_log("browser")
    driver.get(f"{seeded_site}/report.html")
    assert driver.execute_script("return document.readyState") == "complete"
    assert severe_logs(driver) == []
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    rec = driver.find_element("css selector", "#sweep-recommendation")
    assert rec.is_displayed() and "Recommendation" in rec.text
    for plot_id in BAND_PLOTS:
        info = driver.execute_script(_BANDS_JS, f"#{plot_id}")
        assert info is not None, f"{plot_id} has no svg"
        assert info["w"] > 300 and info["h"] > 150, (plot_id, info)
        assert len(info["bands"]) == 2, (plot_id, info["bands"])  # one shaded band per regularizer
        assert all(b["w"] > 100 and 0 < b["opacity"] < 1 for b in info["bands"]), (plot_id, info["bands"])
        assert {"none", "l2"} <= set(info["texts"]), (plot_id, info["texts"])
        element = driver.find_element("css selector", f"#{plot_id}")
        element.location_once_scrolled_into_view  # noqa: B018 - scrolls it into view for the screenshot
        png = element.screenshot_as_png
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"sweep-seeds-{plot_id}.png").write_bytes(png)
        _assert_has_band_colors(png)
    assert severe_logs(driver) == []


def _assert_has_band_colors(png: bytes) -> None:
    """Pale (translucent) tints of the line colours cover a real share of the plot: the bands were painted."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    raw = image.resize((300, 120)).tobytes()
    pixels = [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]
    pale = [p for p in pixels if min(p) > 150 and max(p) < 250 and max(p) - min(p) > 12]
    assert len(pale) > 0.03 * len(pixels), f"only {len(pale)} of {len(pixels)} pixels look like a shaded band"
