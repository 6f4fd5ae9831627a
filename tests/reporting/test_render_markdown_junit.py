"""Markdown summaries and JUnit XML built from hand-made report dicts."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from prunekit.reporting import render_failure_markdown, render_junit, render_junit_failure, render_markdown
from prunekit.reporting.samples import bare_report, compress_report, sweep_report

TIMES = "\u00d7"


def _row(md: str, label: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_markdown_headline_table() -> None:
    md = render_markdown(compress_report(), "job_1")
    assert md.startswith("## prunekit compress `job_1`: ❌ gate missed")
    assert "| Metric | Before | After | Change |" in md
    assert _row(md, "Train accuracy") == ["Train accuracy", "99.58%", "99.30%", "-0.28 pp"]
    assert _row(md, "Validation accuracy") == ["Validation accuracy", "97.22%", "96.42%", "-0.80 pp"]
    assert _row(md, "Generalization gap (train - val)")[1:3] == ["2.36 pp", "2.88 pp"]
    assert _row(md, "Sparsity (pruned layers)")[2] == "70.0%"
    assert _row(md, "Artifact size (zipped)")[1:] == ["208.98 KiB", "59.57 KiB", "-71.5%"]
    assert _row(md, "Speedup (latency before / after)")[2] == f"1.04{TIMES}"
    assert "0.430 ms" in _row(md, "Latency (median), cpu, batch 1")


def test_markdown_gates_marks() -> None:
    md = render_markdown(compress_report())
    assert f"| ❌ Speedup | `min_speedup` | 1.04{TIMES} | ≥ 2.00{TIMES} |" in md
    assert "| ✅ Validation accuracy drop | `max_accuracy_drop` | 0.80 pp | ≤ 2.00 pp |" in md
    passed = render_markdown(compress_report(gate_missed=False))
    assert "✅ passed" in passed.splitlines()[0] and "❌" not in passed


def test_markdown_never_invents_numbers() -> None:
    md = render_markdown(bare_report())
    assert _row(md, "Train accuracy")[1:3] == ["not measured", "not measured"]
    assert _row(md, "Validation accuracy")[1:3] == ["not measured", "not measured"]
    assert _row(md, "Latency (median)")[1:3] == ["not measured", "not measured"]
    assert "No gates were configured." in md


def test_markdown_sweep_trials_and_escaping() -> None:
    report = sweep_report()
    report["gates"][0]["reason"] = "a | b\nc"
    md = render_markdown(report)
    assert "### Trials (8)" in md
    assert "★ l2-s90" in md
    assert "a \\| b c" in md  # a pipe inside a cell does not break the table


def test_failure_markdown() -> None:
    md = render_failure_markdown(
        {"id": "job_9", "status": "failed", "error": {"code": "invalid_model", "message": "bad | file"}}
    )
    assert "job_9" in md and "failed" in md and "invalid_model" in md and "bad \\| file" in md


def test_junit_one_testcase_per_gate() -> None:
    report = compress_report()
    root = ET.fromstring(render_junit(report, "job_1"))
    cases = list(root.iter("testcase"))
    assert [c.get("name") for c in cases] == [g["name"] for g in report["gates"]]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["min_speedup"]
    assert root.get("tests") == "5" and root.get("failures") == "1"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "5" and suite.get("failures") == "1"
    failure = cases[-1].find("failure")
    assert failure is not None and f"1.04{TIMES}" in (failure.get("message") or "")


def test_junit_all_passed_and_no_gates() -> None:
    root = ET.fromstring(render_junit(compress_report(gate_missed=False), "job_2"))
    assert root.get("failures") == "0" and len(list(root.iter("failure"))) == 0
    empty = ET.fromstring(render_junit(bare_report(), "job_3"))
    assert empty.get("tests") == "0" and list(empty.iter("testcase")) == []


def test_junit_unevaluable_gate_and_control_characters() -> None:
    report = compress_report(gate_missed=False)
    report["gates"].append(
        {
            "name": "max_latency_ms",
            "value": None,
            "threshold": 1.0,
            "comparison": "<=",
            "passed": False,
            "reason": "latency not measured\x00\x1b",
        }
    )
    root = ET.fromstring(render_junit(report, "job_4"))  # parses: the control characters are gone
    failure = next(root.iter("failure"))
    assert "not measured" in (failure.get("message") or "")


def test_junit_failure_document() -> None:
    root = ET.fromstring(render_junit_failure("job_5", "invalid_model: nope", "failed"))
    assert root.get("errors") == "1"
    assert root.find("testsuite/testcase/error") is not None
