"""The jobs page: one page of jobs with status, progress, missed gates, readable times and links (no script)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prunekit.reporting.common import DASH, gate_threshold, gate_title, gate_value, gates, num
from prunekit.reporting.html import _MISSED, _OK, _UNSURE, _e, _page, _table

# Longer failure messages are cut in the table; the whole text opens in a <details> below the cut.
MESSAGE_PREVIEW = 60
_SUBMIT = "<code>prunekit submit MODEL --spec spec.yaml</code>"
_STYLE = (
    "<style>td details{min-width:20rem}td details summary{cursor:pointer}td details p{margin:4px 0 0;"
    "white-space:pre-wrap;overflow-wrap:anywhere;max-width:20rem}td .why{display:block;font-size:13px}"
    "nav.pager{margin:12px 0;display:flex;gap:16px}time{white-space:nowrap}td .ago{display:block;font-size:12px}"
    "</style>"
)


@dataclass(frozen=True)
class Pager:
    """Links to the neighbouring pages (None where there is none) and this page's position."""

    newer: str | None = None
    older: str | None = None
    newest: str | None = None  # the first page, when this is not it


def readable_time(value: Any, now: datetime) -> str:
    """An ISO timestamp as `<time>`: 'YYYY-MM-DD HH:MM UTC' and how long ago; DASH when missing."""
    if not value:
        return DASH
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return _e(value)
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    utc = when.astimezone(UTC)
    return (
        f'<time datetime="{_e(utc.isoformat())}" title="{_e(utc.isoformat())}">{utc:%Y-%m-%d %H:%M} UTC</time>'
        f'<span class="ago muted">{_e(_ago(now - utc))}</span>'
    )


def _ago(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _missed_gates(job: Mapping[str, Any]) -> str:
    missed = [g for g in gates(job) if not g.get("passed", True)]
    parts = []
    for g in missed:
        name = str(g.get("name", "?"))
        why = str(g.get("reason") or f"{gate_value(name, g.get('value'))}, needs {gate_threshold(g)}")
        parts.append(f'<span class="why">{_e(gate_title(name))}: {_e(why)}</span>')
    return "".join(parts)


def _gate_cell(job: Mapping[str, Any]) -> str:
    error = job.get("error")
    if isinstance(error, Mapping):
        return _failure(str(error.get("code", "error")), str(error.get("message", "")))
    gate = str(job.get("gate_status"))
    if gate == "gate_missed":
        return _MISSED + _missed_gates(job)
    if gate == "inconclusive":  # no gate missed, but a timing gate's interval straddles its threshold
        return _UNSURE
    return _OK if gate == "passed" else DASH


def _failure(code: str, message: str) -> str:
    if len(message) <= MESSAGE_PREVIEW:
        return f"<code>{_e(code)}</code>: {_e(message)}"
    # Cut before escaping, so the cut never splits an entity; the full text stays one click away.
    preview = message[:MESSAGE_PREVIEW].rstrip() + "\u2026"
    return (
        f'<details title="{_e(message)}"><summary><code>{_e(code)}</code>: {_e(preview)}</summary>'
        f"<p>{_e(message)}</p></details>"
    )


def _links(job: Mapping[str, Any], job_id: str, status: str) -> str:
    raw_links = job.get("links")
    links: Mapping[str, Any] = raw_links if isinstance(raw_links, Mapping) else {}
    report_html = links.get("report_html")
    if not report_html and status == "succeeded":
        report_html = f"/v1/jobs/{job_id}/report.html"
    out = f'<a href="{_e(report_html)}">report</a>' if report_html else DASH
    if links.get("report"):
        out += f' · <a href="{_e(links["report"])}">json</a>'
    if links.get("artifact"):
        out += f' · <a href="{_e(links["artifact"])}">artifact</a>'
    return out


def _row(job: Mapping[str, Any], now: datetime) -> list[str]:
    job_id = str(job.get("id", "?"))
    status = str(job.get("status", "?"))
    progress = DASH
    if status in ("queued", "running"):
        progress = f"{_e(job.get('stage') or status)} {num(job.get('percent')) or 0:.0f}%"
    return [
        f"<code>{_e(job_id)}</code>",
        f'<span class="badge {_e(status)}">{_e(status)}</span>',
        _e(job.get("kind") or DASH),
        progress,
        _gate_cell(job),
        readable_time(job.get("created_at"), now),
        readable_time(job.get("finished_at"), now),
        _links(job, job_id, status),
    ]


def _pager(pager: Pager) -> str:
    links = [
        f'<a rel="{rel}" href="{_e(href)}">{label}</a>'
        for rel, href, label in (
            ("first", pager.newest, "\u21e4 newest"),
            ("prev", pager.newer, "\u2190 newer"),
            ("next", pager.older, "older \u2192"),
        )
        if href
    ]
    return f'<nav class="pager">{"".join(links)}</nav>' if links else ""


def render_jobs_page(
    jobs: Sequence[Mapping[str, Any]],
    refresh_seconds: int | None = None,
    signed_in_as: str | None = None,
    pager: Pager | None = None,
    now: datetime | None = None,
) -> str:
    """One page of jobs, newest first, with links to their reports, to the neighbouring pages, and a sign-out."""
    moment = now or datetime.now(UTC)
    rows = [_row(job, moment) for job in jobs]
    body = "<header><h1>prunekit jobs</h1>"
    meta = f"{len(rows)} job{'s' if len(rows) != 1 else ''}, newest first · times in UTC"
    if signed_in_as:
        meta += (
            f' · signed in as <b>{_e(signed_in_as)}</b> <form method="post" action="/ui/logout" class="inline">'
            '<button type="submit">sign out</button></form>'
        )
    body += f'<div class="meta">{meta}</div></header>'
    nav = _pager(pager or Pager())
    if rows:
        body += nav + _table(["Job", "Status", "Kind", "Progress", "Gates", "Created", "Finished", "Links"], rows) + nav
    else:
        empty = "No older jobs." if pager and pager.newest else f"No jobs yet. Submit one with {_SUBMIT}."
        body += f'{nav}<p class="muted">{empty}</p>'
    head = f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">' if refresh_seconds else ""
    return _page("prunekit jobs", body, head + _STYLE)
