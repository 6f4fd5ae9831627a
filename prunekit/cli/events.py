"""`prunekit logs` (a job's events, live with -f) and `prunekit webhooks` (its delivery log, and redeliver)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from prunekit.cli import remote
from prunekit.cli.exit_codes import ExitCode
from prunekit.client import DEFAULT_SERVER, ConflictError, Event, PrunekitClient
from prunekit.spec.api import WebhookDelivery

JobIdArg = Annotated[str, typer.Argument(help="Job id.")]
JsonLinesOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout.")]


def event_line(event: Event) -> str:
    """One event as a log line: time, kind, stage and percent when it has them, message."""
    where = f" {event.stage}" if event.stage else ""
    pct = f" {event.percent:.0f}%" if event.percent is not None else ""
    return f"{event.ts.isoformat(timespec='seconds')} {event.kind:<8}{where}{pct} {event.message}".rstrip()


def _all_events(client: PrunekitClient, job_id: str) -> Iterator[Event]:
    after: int | None = None
    while True:
        page = client.events(job_id, after)
        if not page.items:
            return
        yield from page.items
        after = page.next_after


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()  # followed live: each line as it comes, not when a buffer fills


def logs(
    job_id: JobIdArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until the job ends.")
    ] = False,
    max_outage: remote.MaxOutageOpt = 300.0,
    server: remote.ServerOpt = DEFAULT_SERVER,
    api_key: remote.ApiKeyOpt = None,
    http_timeout: remote.HttpTimeoutOpt = 60.0,
    json_out: JsonLinesOpt = False,
) -> None:
    """Print a job's events (progress, logs, per-epoch metrics); with -f follow them live until it ends."""
    with remote._errors(json_out, server), remote._client(server, api_key, http_timeout) as client:
        events = client.follow_events(job_id, max_outage=max_outage) if follow else _all_events(client, job_id)
        try:
            for event in events:
                _out(event.model_dump_json() if json_out else event_line(event))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


def delivery_line(d: WebhookDelivery) -> str:
    outcome = f"HTTP {d.status_code}" if d.status_code is not None else "no answer"
    error = f" · {d.error}" if d.error and d.error != outcome else ""
    when = d.created_at.isoformat(timespec="seconds")
    result = "ok" if d.ok else "failed"
    return f"{when} {d.event_type:<16} attempt {d.attempt} {result} {outcome}{error} ({d.duration_ms:.0f} ms)"


def webhooks(
    job_id: JobIdArg,
    redeliver: Annotated[bool, typer.Option("--redeliver", help="Queue the job's webhook again first.")] = False,
    server: remote.ServerOpt = DEFAULT_SERVER,
    api_key: remote.ApiKeyOpt = None,
    http_timeout: remote.HttpTimeoutOpt = 60.0,
    json_out: JsonLinesOpt = False,
) -> None:
    """Show a job's webhook delivery log (each attempt); --redeliver sends the webhook of its end again."""
    with remote._errors(json_out, server), remote._client(server, api_key, http_timeout) as client:
        if redeliver:
            try:
                queued = client.redeliver_webhook(job_id)
            except ConflictError as exc:
                remote._fail(ExitCode.INVALID_INPUT, f"cannot redeliver: {exc.detail or exc.code}", json_out)
            remote._say(f"{job_id}: {queued.event_type} queued again ({queued.message_id})")
        cursor: str | None = None
        while True:
            page = client.webhook_deliveries(job_id, cursor=cursor)
            for d in page.items:
                _out(json.dumps(d.model_dump(mode="json")) if json_out else delivery_line(d))
            cursor = page.next_cursor
            if not cursor:
                return


def register(app: typer.Typer) -> None:
    """Attach `logs` and `webhooks` to the main app."""
    panel = "Server (client)"
    app.command("logs", rich_help_panel=panel)(logs)
    app.command("webhooks", rich_help_panel=panel)(webhooks)
