"""An inconclusive timing gate and the latency per runtime, as markdown, JUnit and HTML show them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from prunekit.reporting import render_junit, render_markdown
from prunekit.reporting.common import overall_status
from prunekit.reporting.html import render_report_html
from prunekit.reporting.samples import compress_report, inconclusive_report
from prunekit.spec.report import GateResult

TIMES = "\u00d7"


def test_markdown_marks_the_inconclusive_gate_and_the_runtime_table() -> None:
    md = render_markdown(inconclusive_report())
    assert md.splitlines()[0].endswith("❔ inconclusive")
    gate = next(line for line in md.splitlines() if "`min_speedup`" in line)
    assert gate.startswith("| ❔ Speedup") and "straddles 1x" in gate
    row = next(line for line in md.splitlines() if line.startswith("| pytorch (eager) |"))
    assert f"96% interval 0.97{TIMES}-1.04{TIMES}" in row and "| no |" in row and "sparse kernel" in row


def test_junit_skips_the_inconclusive_gate_and_fails_none() -> None:
    root = ET.fromstring(render_junit(inconclusive_report(), "job_9"))
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("5", "0", "1")
    [skipped] = [c for c in root.iter("testcase") if c.find("skipped") is not None]
    assert skipped.get("name") == "min_speedup"
    message = skipped.find("skipped").get("message")  # type: ignore[union-attr]
    assert message is not None and "straddles" in message


def test_html_badge_and_gate_result() -> None:
    page = render_report_html(inconclusive_report())
    assert '<span class="badge inconclusive">inconclusive</span>' in page
    assert '<span class="unsure">? inconclusive</span>' in page and "Latency by runtime" in page


def test_reports_without_outcomes_still_read_as_before() -> None:
    # Reports written before `outcome` existed: passed/failed from `passed`, the status derived the same way.
    old = compress_report()
    del old["status"]
    assert overall_status(old) == "gate_missed"
    assert [GateResult.model_validate(g).outcome for g in old["gates"]][-1] == "failed"
    new = inconclusive_report()
    del new["status"]
    assert overall_status(new) == "inconclusive"
