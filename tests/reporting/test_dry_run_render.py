"""The dry-run section of the markdown and HTML reports: problems first, blockers, estimates, the layer table."""

from __future__ import annotations

from typing import Any

from prunekit.reporting import render_markdown, render_report_html
from prunekit.spec.report import DryRunEstimate, DryRunLayer, DryRunProblem, DryRunReport, StructuralBlocker


def _report(problems: list[DryRunProblem]) -> dict[str, Any]:
    section = DryRunReport(
        format="state_dict",
        container="safetensors",
        task="classification",
        architecture="torchvision/resnet18",
        method="structural",
        prunable=[DryRunLayer(name=f"conv{i}", shape=[8, 8, 3, 3], params=576, sparsity=0.5, params_after=288)
                  for i in range(45)],
        structural_blockers=[StructuralBlocker(layer="grouped", message="could not remove channels from 'grouped'")],
        expected=DryRunEstimate(params_before=2_000_000, params_after=500_000, macs_before=10**9, macs_after=2 * 10**8,
                                file_bytes_before=8_000_000, file_bytes_after=2_000_000),
        output_format="torchscript",
        output_formats=["torchscript", "export"],
        problems=problems,
    )  # fmt: skip
    return {
        "kind": "dry_run",
        "spec": {"pruning": {"method": "structural"}},
        "dry_run": section.model_dump(mode="json"),
    }


def test_markdown_dry_run_lists_problems_blockers_and_estimates() -> None:
    text = render_markdown(_report([DryRunProblem(code="missing_inputs", message="set model.input_shape")]), "job_1")
    assert text.startswith("## prunekit dry run `job_1`: ❌ 1 problem(s)")
    assert "| `missing_inputs` | set model.input_shape |" in text
    assert "- grouped: could not remove channels from 'grouped'" in text
    assert "| Parameters | 2.00M | 500.00k |" in text and "| MACs per sample | 1.00G | 200.00M |" in text
    assert "| conv39 |" in text and "| conv40 |" not in text and "… 5 more layers in report.json." in text
    assert "Validation accuracy" not in text  # no before/after headline: nothing was pruned


def test_html_dry_run_section_replaces_the_headline() -> None:
    html = render_report_html(_report([]))
    assert 'id="dry-run"' in html and "No problems found." in html and 'id="headline"' not in html
    assert "Structural blockers" in html and "torchscript (possible: torchscript, export)" in html
    problem = render_report_html(_report([DryRunProblem(code="forward_failed", message="bad <shape>")]))
    assert "Problems (1)" in problem and "bad &lt;shape&gt;" in problem
