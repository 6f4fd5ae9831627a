"""JUnit XML for CI test dashboards (GitLab, Jenkins): one test case per quality gate."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from prunekit.reporting.common import (
    gate_interval,
    gate_outcome,
    gate_threshold,
    gate_title,
    gate_value,
    gates,
    headline_rows,
    notes,
)

# Characters XML 1.0 forbids; a stray one in a log message would make the whole file unreadable.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: object) -> str:
    return _INVALID_XML.sub("?", str(text))


def _suite_root(job_id: str, tests: int, failures: int, errors: int, skipped: int = 0) -> tuple[ET.Element, ET.Element]:
    counts = {
        "tests": str(tests),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": "0",
    }
    root = ET.Element("testsuites", {"name": "prunekit", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": _clean(f"prunekit.{job_id}"), **counts})
    return root, suite


def _serialize(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render_junit(report: Mapping[str, Any], job_id: str) -> str:
    """One <testcase> per gate in the report; a missed gate carries a <failure> with value and threshold.

    An inconclusive gate (its interval straddles the threshold) is <skipped>: it was neither met nor missed.
    """
    gate_list = gates(report)
    failed = [g for g in gate_list if gate_outcome(g) == "failed"]
    unsure = [g for g in gate_list if gate_outcome(g) == "inconclusive"]
    root, suite = _suite_root(job_id, len(gate_list), len(failed), 0, len(unsure))
    props = ET.SubElement(suite, "properties")
    for name, value in (("job_id", job_id), ("kind", report.get("kind")), ("status", report.get("status"))):
        if value is not None:
            ET.SubElement(props, "property", {"name": name, "value": _clean(value)})
    for g in gate_list:
        name = str(g.get("name", "gate"))
        case = ET.SubElement(suite, "testcase", {"classname": "prunekit.gates", "name": _clean(name), "time": "0"})
        value, threshold = gate_value(name, g.get("value")), gate_threshold(g)
        line = f"{gate_title(name)}: {value} (required {threshold})"
        interval = gate_interval(g)
        line += f", {interval}" if interval else ""
        outcome = gate_outcome(g)
        if outcome == "passed":
            ET.SubElement(case, "system-out").text = _clean(line)
        elif outcome == "inconclusive":
            message = f"{name} inconclusive: {g.get('reason') or interval}"
            ET.SubElement(case, "skipped", {"message": _clean(message)}).text = _clean(line)
        else:
            reason = str(g.get("reason") or "")
            message = f"{name}: {value}, required {threshold}" + (f" ({reason})" if reason else "")
            failure = ET.SubElement(case, "failure", {"message": _clean(message), "type": "GateMissed"})
            failure.text = _clean(line + (f"\n{reason}" if reason else ""))
    summary = [f"{r.label}: {r.before} -> {r.after}" for r in headline_rows(report)]
    summary += [f"note: {n}" for n in notes(report)]
    ET.SubElement(suite, "system-out").text = _clean("\n".join(summary))
    return _serialize(root)


def render_junit_failure(job_id: str, message: str, status: str = "failed") -> str:
    """A single errored test case for a job that produced no report (failed, canceled, timed out)."""
    root, suite = _suite_root(job_id, 1, 0, 1)
    case = ET.SubElement(suite, "testcase", {"classname": "prunekit.job", "name": "job", "time": "0"})
    error = ET.SubElement(case, "error", {"message": _clean(f"job {status}: {message}"), "type": _clean(status)})
    error.text = _clean(message)
    return _serialize(root)
