"""The JSON Schemas kept in docs/ are the ones the code produces (regenerate with `prunekit spec schema`)."""

from __future__ import annotations

import json
from pathlib import Path

from prunekit.spec import json_schema
from prunekit.spec.report import report_json_schema

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_report_schema_in_docs_is_current() -> None:
    assert json.loads((DOCS / "report.schema.json").read_text()) == report_json_schema()


def test_spec_schema_in_docs_is_current() -> None:
    assert json.loads((DOCS / "spec.schema.json").read_text()) == json_schema()
