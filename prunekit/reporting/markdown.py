"""Markdown summary of a report, sized for $GITHUB_STEP_SUMMARY and merge-request comments."""

from __future__ import annotations

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
    method_summary,
    ms,
    notes,
    num,
    overall_status,
    pct,
    pp,
    runtime_rows,
    trials,
)
from prunekit.reporting.stages import stage_table
from prunekit.reporting.transformer import transformer_section

PASS, FAIL, UNSURE = "✅", "❌", "❔"
_MARK = {"passed": PASS, "failed": FAIL, "inconclusive": UNSURE}
_BADGE = {"passed": f"{PASS} passed", "gate_missed": f"{FAIL} gate missed", "inconclusive": f"{UNSURE} inconclusive"}
MAX_TRIAL_ROWS = 50


def _cell(value: object) -> str:
    # A pipe or newline inside a cell would break the table.
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    aligns = align or ["---"] * len(header)
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(report: Mapping[str, Any], job_id: str | None = None) -> str:
    """Headline table (accuracy before/after on train and val, gap, sparsity, size, latency, speedup) and gates."""
    if isinstance(report.get("dry_run"), Mapping):
        from prunekit.reporting.dry_run import dry_run_markdown  # late: that module uses this one's table helper

        return dry_run_markdown(report, job_id)
    status = overall_status(report)
    badge = _BADGE.get(status, status)
    title = f"## prunekit {report.get('kind') or 'compress'}"
    if job_id:
        title += f" `{job_id}`"
    lines = [f"{title}: {badge}", ""]
    meta = [f"**Method:** {method_summary(report)}" if method_summary(report) else ""]
    if report.get("input_format") or report.get("output_format"):
        meta.append(f"**Format:** {report.get('input_format', '?')} → {report.get('output_format', '?')}")
    if report.get("artifact_name"):
        meta.append(f"**Artifact:** `{report['artifact_name']}`")
    meta = [m for m in meta if m]
    if meta:
        lines += [" · ".join(meta), ""]

    rows = [[r.label, r.before, r.after, r.change] for r in headline_rows(report)]
    lines += _table(["Metric", "Before", "After", "Change"], rows, ["---", "--:", "--:", "--:"])
    lines.append("")
    lines += _runtimes(report)
    lines += _stages(report)
    lines += _transformer(report)

    gate_list = gates(report)
    lines.append("### Gates")
    lines.append("")
    if gate_list:
        gate_rows = []
        for g in gate_list:
            name = str(g.get("name", "?"))
            result = _MARK[gate_outcome(g)]
            reason = str(g.get("reason") or "") or gate_interval(g)  # an inconclusive gate's reason states it
            value = gate_value(name, g.get("value"))
            gate_rows.append([f"{result} {gate_title(name)}", f"`{name}`", value, gate_threshold(g), reason])
        lines += _table(["Gate", "Name", "Value", "Threshold", "Note"], gate_rows)
    else:
        lines.append("No gates were configured.")
    lines.append("")

    trial_list = trials(report)
    if trial_list:
        lines += [f"### Trials ({len(trial_list)})", ""]
        trial_rows = []
        for t in trial_list[:MAX_TRIAL_ROWS]:
            trial_rows.append(
                [
                    ("★ " if t.get("pareto") else "") + str(t.get("name", "?")),
                    pct(t.get("sparsity"), 1),
                    pct(t.get("val_accuracy")),
                    pp(t.get("gap")),
                    pp(t.get("accuracy_drop")),
                    ms(t.get("latency_ms")),
                ]
            )
        lines += _table(
            ["Trial", "Sparsity", "Val accuracy", "Gap", "Accuracy drop", "Latency"],
            trial_rows,
            ["---", "--:", "--:", "--:", "--:", "--:"],
        )
        if len(trial_list) > MAX_TRIAL_ROWS:
            lines.append(f"\n… {len(trial_list) - MAX_TRIAL_ROWS} more trials in the full report.")
        lines += ["", "★ = on the accuracy-vs-sparsity Pareto front.", ""]

    note_list = notes(report)
    if note_list:
        lines += ["### Notes", ""]
        lines += [f"- {n.replace(chr(10), ' ')}" for n in note_list]
        lines.append("")
    seconds = report.get("stage_seconds")
    if isinstance(seconds, Mapping):
        total = sum(v for v in (num(x) for x in seconds.values()) if v is not None)
        if total:
            lines += [f"<sub>Ran in {total:.1f} s · seed {report.get('seed', '?')}</sub>", ""]
    return "\n".join(lines)


def _runtimes(report: Mapping[str, Any]) -> list[str]:
    """Latency per runtime, and whether the method can make the model faster there."""
    rows = runtime_rows(report)
    if not rows:
        return []
    table = [[r.runtime, r.before, r.after, r.speedup, r.possible, r.why] for r in rows]
    header = ["Runtime", "Latency before", "Latency after", "Speedup", "Speedup possible?", "Why"]
    return ["### Latency by runtime", "", *_table(header, table, ["---", "--:", "--:", "--:", "---", "---"]), ""]


def _stages(report: Mapping[str, Any]) -> list[str]:
    """Dense, pruned, fine-tuned (and quantized) side by side (nothing for reports without stages)."""
    table = stage_table(report)
    if table is None:
        return []
    align = ["---", "--:", "--:", "--:", "--:", "--:", "---", "---"]
    return ["### Stages", "", *_table(table.header, table.rows, align), ""]


def _transformer(report: Mapping[str, Any]) -> list[str]:
    """Widths before and after transformer_structural pruning (nothing for other methods)."""
    section = transformer_section(report)
    if section is None:
        return []
    lines = ["### Transformer structural pruning", ""]
    lines += _table(["Config field", "Before", "After", "Change"], section.rows, ["---", "--:", "--:", "--:"])
    lines += ["", *[f"- **{k}:** {v}" for k, v in section.facts], ""]
    return lines


def render_failure_markdown(job: Mapping[str, Any]) -> str:
    """Summary for a job that ended without a report (failed or canceled)."""
    status = str(job.get("status", "unknown"))
    raw_error = job.get("error")
    error: Mapping[str, Any] = raw_error if isinstance(raw_error, Mapping) else {}
    lines = [f"## prunekit job `{job.get('id', '?')}`: {FAIL} {status}", ""]
    if error:
        lines += [f"**{_cell(error.get('code', 'error'))}:** {_cell(error.get('message', ''))}", ""]
    if job.get("stage"):
        lines += [f"Last stage: `{job.get('stage')}` ({num(job.get('percent')) or 0:.0f}%)", ""]
    return "\n".join(lines)
