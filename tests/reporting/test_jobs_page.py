"""The jobs page's cells: which gate was missed, readable times, failure messages that stay one line long."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

from prunekit.reporting.common import DASH
from prunekit.reporting.jobs_page import MESSAGE_PREVIEW, Pager, readable_time, render_jobs_page

NOW = datetime(2025, 1, 1, 2, 30, tzinfo=UTC)
MISSED = {
    "id": "job_m",
    "status": "succeeded",
    "gate_status": "gate_missed",
    "created_at": "2025-01-01T00:00:00Z",
    "finished_at": "2025-01-01T02:29:20+00:00",
    "gates": [
        {"name": "max_accuracy_drop", "value": 0.031, "threshold": 0.01, "comparison": "<=", "passed": False},
        {"name": "min_sparsity", "value": 0.5, "threshold": 0.5, "comparison": ">=", "passed": True},
        {"name": "max_latency_ms", "value": None, "threshold": 5, "comparison": "<=", "passed": False,
         "reason": "latency was not measured"},
    ],
}  # fmt: skip


def test_a_missed_gate_names_the_gates_that_failed_and_why() -> None:
    page = render_jobs_page([MISSED], now=NOW)
    cell = re.search(r"\u2717 missed</span>(.*?)</td>", page)
    assert cell is not None
    assert "Validation accuracy drop: " in cell.group(1) and "needs \u2264" in cell.group(1)
    assert "Latency (median): latency was not measured" in cell.group(1)
    assert "Sparsity" not in cell.group(1)  # the gate that passed is not listed


def test_times_are_readable_and_say_how_long_ago() -> None:
    page = render_jobs_page([MISSED], now=NOW)
    assert '<time datetime="2025-01-01T00:00:00+00:00"' in page and "2025-01-01 00:00 UTC</time>" in page
    assert "2 h ago" in page and "40 s ago" in page
    assert readable_time(None, NOW) == DASH and readable_time("yesterday", NOW) == "yesterday"
    assert readable_time("2025-01-01T02:29:00", NOW).endswith("1 min ago</span>")  # naive times are UTC


def test_a_long_failure_message_is_cut_with_the_whole_text_one_click_away() -> None:
    message = "x" * (MESSAGE_PREVIEW - 2) + "<&>" + " the rest of a very long traceback-like text" * 20
    job = {"id": "job_f", "status": "failed", "error": {"code": "invalid_model", "message": message}}
    page = render_jobs_page([job], now=NOW)
    summary = re.search(r"<summary>(.*?)</summary>", page)
    assert summary is not None
    text = html.unescape(re.sub(r"<[^>]+>", "", summary.group(1)))
    assert text == f"invalid_model: {message[:MESSAGE_PREVIEW]}\u2026"
    assert f"<p>{html.escape(message)}</p>" in page and f'title="{html.escape(message)}"' in page
    assert "&l\u2026" not in page and "&amp\u2026" not in page  # never an entity cut in half
    short = render_jobs_page([{**job, "error": {"code": "invalid_model", "message": "bad <input>"}}], now=NOW)
    assert "<details" not in short and "bad &lt;input&gt;" in short


def test_pager_links_and_no_script() -> None:
    page = render_jobs_page([MISSED], pager=Pager(newer="/ui?after=b", older="/ui?before=a", newest="/ui"), now=NOW)
    assert '<a rel="prev" href="/ui?after=b">' in page and '<a rel="next" href="/ui?before=a">' in page
    assert '<a rel="first" href="/ui">' in page and "<script" not in page
    assert "No older jobs." in render_jobs_page([], pager=Pager(newest="/ui"))
    assert "No jobs yet" in render_jobs_page([])
