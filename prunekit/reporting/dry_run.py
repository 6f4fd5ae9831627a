"""The dry run's report (`report.dry_run`) as CLI lines, a markdown summary and an HTML section.

Reads the report as a plain dict like the other renderers; every field is optional. The markdown and HTML
renderers call in here late, since this module uses their table helpers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prunekit.reporting.common import DASH, get, human_bytes, human_count, method_summary, pct
from prunekit.reporting.html import _e
from prunekit.reporting.html import _table as html_table
from prunekit.reporting.markdown import _table as md_table

MAX_LAYER_ROWS = 40
ESTIMATE = "estimates, nothing was pruned"


def dry_run_of(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The report's dry-run section, or None for other kinds."""
    section = report.get("dry_run")
    return section if isinstance(section, Mapping) else None


def problems(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The problems the full job would hit ({code, message} dicts)."""
    raw = get(report, "dry_run", "problems")
    return [p for p in raw if isinstance(p, Mapping)] if isinstance(raw, list) else []


def _list(section: Mapping[str, Any], key: str) -> list[Any]:
    raw = section.get(key)
    return raw if isinstance(raw, list) else []


def _detected(section: Mapping[str, Any]) -> str:
    container = f" ({section['container']})" if section.get("container") else ""
    arch = f", architecture {section['architecture']}" if section.get("architecture") else ""
    return f"{section.get('format', '?')}{container}, task {section.get('task', '?')}{arch}"


def _inputs(section: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{i.get('name')}: {i.get('dtype')} {i.get('shape')}" for i in _list(section, "inputs"))
    source = f" (from {section['inputs_source']})" if section.get("inputs_source") else ""
    ran = "forward pass ok" if section.get("forward_ok") else "no forward pass"
    return f"{shown or 'none'}{source}; {ran}"


def _expected_parts(section: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(what, before, expected after) rows of the estimate."""
    est = section.get("expected")
    if not isinstance(est, Mapping):
        return []
    return [
        ("Parameters", human_count(est.get("params_before")), human_count(est.get("params_after"))),
        ("MACs per sample", human_count(est.get("macs_before")), human_count(est.get("macs_after"))),
        ("File size", human_bytes(est.get("file_bytes_before")), human_bytes(est.get("file_bytes_after"))),
    ]


def _prunable_total(section: Mapping[str, Any]) -> str:
    layers = _list(section, "prunable")
    params = sum(int(row.get("params") or 0) for row in layers)
    return f"{len(layers)} layer(s), {human_count(params)} parameters"


def _blocker_text(blocker: Mapping[str, Any]) -> str:
    layer = f"{blocker['layer']}: " if blocker.get("layer") else ""
    legal = blocker.get("legal_ratios")
    ratios = f" (legal ratios: {', '.join(str(r) for r in legal)})" if isinstance(legal, list) and legal else ""
    return f"{layer}{blocker.get('message', '')}{ratios}"


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """A few lines for the terminal: detected model, inputs, plan, estimates, formats, blockers, problems."""
    section = dry_run_of(report)
    if section is None:
        return ["not a dry-run report"]
    lines = [
        f"detected: {_detected(section)}",
        f"inputs:   {_inputs(section)}",
        f"prunable ({section.get('method', '?')}): {_prunable_total(section)}; "
        f"not prunable: {len(_list(section, 'not_prunable'))}",
    ]
    parts = _expected_parts(section)
    if parts:
        lines.append("expected: " + ", ".join(f"{w.lower()} {b} -> {a}" for w, b, a in parts) + f" ({ESTIMATE})")
    formats = ", ".join(_list(section, "output_formats")) or "none"
    lines.append(f"output:   {section.get('output_format') or DASH} (possible: {formats})")
    lines += [f"blocker:  {_blocker_text(b)}" for b in _list(section, "structural_blockers")]
    found = problems(report)
    lines += [f"problem {p.get('code', '?')}: {p.get('message', '')}" for p in found]
    lines.append(
        f"dry run took {section.get('seconds', 0):.1f} s; " + (f"{len(found)} problem(s)" if found else "no problems")
    )
    return lines


def _layer_rows(section: Mapping[str, Any]) -> list[list[str]]:
    return [
        [
            str(row.get("name", "?")),
            str(row.get("shape", "")),
            human_count(row.get("params")),
            pct(row.get("sparsity"), 1),
            human_count(row.get("params_after")),
        ]
        for row in _list(section, "prunable")[:MAX_LAYER_ROWS]
    ]


def _more(section: Mapping[str, Any]) -> str:
    extra = len(_list(section, "prunable")) - MAX_LAYER_ROWS
    return f"… {extra} more layers in report.json." if extra > 0 else ""


LAYER_HEADER = ["Layer", "Shape", "Params", "Removed", "Params after"]


def dry_run_markdown(report: Mapping[str, Any], job_id: str | None = None) -> str:
    """The dry run as markdown: problems first, then what was detected, the plan and the estimates."""
    section = dry_run_of(report) or {}
    found = problems(report)
    badge = f"❌ {len(found)} problem(s)" if found else "✅ no problems"
    title = "## prunekit dry run" + (f" `{job_id}`" if job_id else "")
    lines = [
        f"{title}: {badge}",
        "",
        f"**Method:** {method_summary(report) or '?'} · **Detected:** {_detected(section)}",
    ]
    lines += ["", f"**Inputs:** {_inputs(section)}", ""]
    if found:
        lines += ["### Problems", ""]
        lines += md_table(["Code", "Problem"], [[f"`{p.get('code')}`", str(p.get("message", ""))] for p in found])
        lines.append("")
    blockers = _list(section, "structural_blockers")
    if blockers:
        lines += ["### Structural blockers", ""] + [f"- {_blocker_text(b)}" for b in blockers] + [""]
    parts = _expected_parts(section)
    if parts:
        lines += [f"### Expected after pruning ({ESTIMATE})", ""]
        lines += [*md_table(["", "Before", "Expected after"], [list(p) for p in parts], ["---", "--:", "--:"]), ""]
    lines += [f"### Prunable: {_prunable_total(section)}", ""]
    lines += md_table(LAYER_HEADER, _layer_rows(section), ["---", "---", "--:", "--:", "--:"])
    lines += [_more(section), ""] if _more(section) else [""]
    formats = ", ".join(_list(section, "output_formats")) or "none"
    lines += [f"**Output:** {section.get('output_format') or DASH} (possible: {formats})", ""]
    lines += [f"- {r}" for r in _list(section, "runtimes")] + [""]
    return "\n".join(lines)


def dry_run_html(report: Mapping[str, Any]) -> str:
    """The dry run's HTML section (in place of the before/after headline, gates and plots)."""
    section = dry_run_of(report) or {}
    found = problems(report)
    out = ['<section id="dry-run"><h2>Dry run</h2>']
    out.append(f"<p>Detected {_e(_detected(section))}. Inputs: {_e(_inputs(section))}.</p>")
    if found:
        rows = [[f"<code>{_e(p.get('code'))}</code>", _e(p.get("message", ""))] for p in found]
        out.append(
            f"<h3>Problems ({len(found)})</h3>"
            + html_table(["Code", "Problem"], rows, row_classes=["fail"] * len(rows))
        )
    else:
        out.append('<p class="ok">No problems found.</p>')
    blockers = _list(section, "structural_blockers")
    if blockers:
        out.append(
            "<h3>Structural blockers</h3><ul>" + "".join(f"<li>{_e(_blocker_text(b))}</li>" for b in blockers) + "</ul>"
        )
    parts = _expected_parts(section)
    if parts:
        out.append(f"<h3>Expected after pruning ({_e(ESTIMATE)})</h3>")
        out.append(html_table(["", "Before", "Expected after"], [[_e(c) for c in p] for p in parts], num_cols=(1, 2)))
    out.append(f"<h3>Prunable: {_e(_prunable_total(section))}</h3>")
    rows = [[_e(c) for c in row] for row in _layer_rows(section)]
    out.append(
        html_table(LAYER_HEADER, rows, num_cols=(2, 3, 4))
        + (f'<p class="muted">{_e(_more(section))}</p>' if _more(section) else "")
    )
    formats = ", ".join(_list(section, "output_formats")) or "none"
    out.append(f"<h3>Output</h3><p>{_e(section.get('output_format') or DASH)} (possible: {_e(formats)})</p>")
    runtimes = _list(section, "runtimes")
    if runtimes:
        out.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in runtimes) + "</ul>")
    out.append("</section>")
    return "".join(out)


def has_problems(report: Mapping[str, Any]) -> bool:
    """True when a dry-run report lists problems the full job would hit."""
    return bool(problems(report))
