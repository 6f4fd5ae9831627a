"""The self-contained HTML report and the jobs page."""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser

import pytest

from prunekit.reporting import html as html_mod
from prunekit.reporting import render_jobs_page, render_report_html
from prunekit.reporting.samples import bare_report, compress_report, sweep_report

TIMES = "\u00d7"

EXTERNAL = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I
)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.ids: list[str] = []
        self.figures: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        d = dict(attrs)
        if d.get("id"):
            self.ids.append(str(d["id"]))
        if tag == "figure":
            self.figures.append(str(d.get("id")))


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    return p


def test_sweep_report_is_self_contained_with_all_plots() -> None:
    page = render_report_html(sweep_report(), "job_sweep")
    assert not EXTERNAL.search(page)
    assert "http://" not in page and "https://" not in page  # not even SVG namespace URIs
    assert "<script" not in page.lower()
    tags = _parse(page)
    assert tags.figures == ["plot-accuracy", "plot-history", "plot-layers", "plot-pareto"]
    assert tags.tags["svg"] == 4
    dupes = [i for i, n in Counter(tags.ids).items() if n > 1]
    assert dupes == []  # ids from several matplotlib figures must not collide
    for text in (
        "96.42%",
        "97.22%",
        "2.88 pp",
        "70.0%",
        f"1.04{TIMES}",
        "Spec as run",
        "Environment",
        "Isolation",
        "torch",
        "2.14.1",
        "Read this first",
        "Trials (8)",
        "gap ",
    ):
        assert text in page, text


def test_compress_report_has_no_pareto_plot_and_marks_missed_gate() -> None:
    page = render_report_html(compress_report())
    tags = _parse(page)
    assert tags.figures == ["plot-accuracy", "plot-history", "plot-layers"]
    assert 'class="fail"' in page and "missed" in page
    assert "gate missed" in page


def test_bare_report_says_not_measured() -> None:
    page = render_report_html(bare_report())
    assert "not measured" in page
    assert "<svg" not in page
    assert "No data for:" in page
    assert not EXTERNAL.search(page)


def test_user_text_is_escaped() -> None:
    report = compress_report()
    report["notes"] = ["<script>alert(1)</script>"]
    report["spec"]["model"]["architecture"] = "</pre><img src=x>"
    page = render_report_html(report)
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "<img src=x>" not in page


def test_without_matplotlib_the_page_still_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html_mod, "_mpl", lambda: None)
    page = render_report_html(sweep_report())
    assert "<svg" not in page and "matplotlib" in page and "96.42%" in page


def test_odd_values_do_not_crash() -> None:
    report = sweep_report()
    report["trials"][0]["val_accuracy"] = None
    report["trials"][1]["gap"] = None
    report["history"][2]["val_accuracy"] = float("nan")
    report["sparsity"]["layers"] = [
        {"name": f"l{i}.weight", "shape": [4], "params": i + 1, "zeros": 0, "sparsity": 0.5, "pruned": i % 2 == 0}
        for i in range(300)
    ]
    page = render_report_html(report)
    assert "Showing 80 of 300 parameters" in page
    assert page.count("<svg") == 4


def test_jobs_page() -> None:
    jobs = [
        {
            "id": "job_a",
            "status": "succeeded",
            "kind": "sweep",
            "gate_status": "passed",
            "created_at": "2025-01-01T00:00:00Z",
            "links": {
                "report_html": "/v1/jobs/job_a/report.html",
                "report": "/v1/jobs/job_a/report",
                "artifact": "/v1/jobs/job_a/artifact",
            },
        },
        {"id": "job_b", "status": "running", "stage": "finetune", "percent": 40.0, "kind": "compress", "links": {}},
        {"id": "job_<c>", "status": "failed", "error": {"code": "invalid_model", "message": "<bad>"}},
    ]
    page = render_jobs_page(jobs, refresh_seconds=10)
    assert 'href="/v1/jobs/job_a/report.html"' in page
    assert "finetune 40%" in page
    assert "job_&lt;c&gt;" in page and "&lt;bad&gt;" in page
    assert 'http-equiv="refresh"' in page
    assert not EXTERNAL.search(page)
    assert "No jobs yet" in render_jobs_page([])
