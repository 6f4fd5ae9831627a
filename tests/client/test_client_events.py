"""Following a job's events (SSE, resumed after a dropped stream), `prunekit logs`, `prunekit webhooks`, and the
CI-log output printing each progress update once."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from prunekit.cli import remote
from prunekit.cli.main import app
from prunekit.client import PrunekitClient, UnreachableError
from prunekit.client.sse import frames
from prunekit.spec.api import Event, EventKind
from tests.client.fake_bodies import new_job, updated
from tests.client.prunekit_fake_api import FAST_RETRY, GOOD_KEY, FakeApi, FakeServer, Plan


def test_sse_frames_parse_ids_multiline_data_and_skip_comments() -> None:
    lines = ["retry: 2000", "", ": keep-alive", "", "id: 7", "event: log", "data: a", "data: b", "", "event: end"]
    lines += ["data: {}", ""]
    got = list(frames(lines))
    assert [(f.event, f.data, f.id) for f in got] == [("log", "a\nb", "7"), ("end", "{}", "7")]


def test_follow_events_yields_every_event_in_order_and_ends_with_the_job(client: PrunekitClient, api: FakeApi) -> None:
    job_id = api.add_job(Plan(steps=3))
    seqs = [e.seq for e in client.follow_events(job_id)]
    assert seqs == [1, 2, 3, 4] and api.jobs[job_id].terminal  # three running snapshots, then the end
    (call,) = api.calls("GET", rf"/v1/jobs/{job_id}/events")
    assert call.headers["Accept"] == "text/event-stream" and "Last-Event-ID" not in call.headers


def test_a_dropped_stream_resumes_after_the_last_event(client: PrunekitClient, api: FakeApi) -> None:
    job_id = api.add_job(Plan(steps=4))
    api.fail("GET", r"/v1/jobs/.*/events", action="cut", truncate_at=2)
    assert [e.seq for e in client.follow_events(job_id)] == [1, 2, 3, 4, 5]  # none lost, none twice
    first, second = api.calls("GET", rf"/v1/jobs/{job_id}/events")
    assert "Last-Event-ID" not in first.headers and second.headers["Last-Event-ID"] == "2"


def test_a_server_without_live_events_is_polled(client: PrunekitClient, api: FakeApi) -> None:
    api.sse = False
    job_id = api.add_job(Plan(steps=2))
    assert [e.seq for e in client.follow_events(job_id, poll_interval=0.01)] == [1, 2, 3]


def test_following_gives_up_after_the_outage_allowance(dead_url: str) -> None:
    client = PrunekitClient(dead_url, GOOD_KEY, retry=FAST_RETRY, sleep=lambda s: None)
    with client, pytest.raises(UnreachableError):
        list(client.follow_events("job_x", max_outage=0))


@pytest.fixture()
def run(fake: FakeServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setattr(remote, "_client", lambda s, k, t=60.0: PrunekitClient(s, k, timeout=t, retry=FAST_RETRY))
    runner = CliRunner()

    def invoke(*args: str) -> object:
        env = {"PRUNEKIT_SERVER": fake.url, "PRUNEKIT_API_KEY": GOOD_KEY}
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    yield invoke


def test_logs_prints_the_events_so_far_and_follows_with_f(run, api: FakeApi) -> None:  # type: ignore[no-untyped-def]
    job_id = api.add_job(Plan(steps=3))
    result = run("logs", job_id)
    assert result.exit_code == 0 and result.stdout == ""  # nothing has happened yet
    result = run("logs", job_id, "-f")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and " log " in lines[0] and lines[-1].endswith("succeeded report")
    result = run("logs", job_id, "--json")
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1, 2, 3, 4]


def test_webhooks_redeliver_and_list(run, api: FakeApi) -> None:  # type: ignore[no-untyped-def]
    running = api.add_job(Plan(outcome="never"))
    result = run("webhooks", running, "--redeliver")
    assert result.exit_code == 2 and "cannot redeliver" in result.stderr
    done = api.add_job(Plan(outcome="canceled", steps=0))
    api._advance(done)
    result = run("webhooks", done, "--redeliver")
    assert result.exit_code == 0, result.stderr
    assert "job.canceled queued again" in result.stderr
    assert "attempt 1 ok HTTP 200" in result.stdout


def test_submit_sends_the_webhook_event_filter(run, api: FakeApi, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, spec = tmp_path / "m.pt", tmp_path / "s.yaml"
    model.write_bytes(b"model")
    spec.write_text("version: 1\npruning:\n  method: magnitude\n  sparsity: 0.5\n")
    args = ["submit", str(model), "--spec", str(spec), "--webhook-url", "https://hooks.example.com/x"]
    result = run(*args, "--webhook-event", "job.failed", "--webhook-event", "job.gate_missed")
    assert result.exit_code == 0, result.stderr
    body = json.loads(api.calls("POST", "/v1/jobs")[-1].body)
    assert body["webhook_events"] == ["job.failed", "job.gate_missed"]
    assert run(*args).exit_code == 0
    assert "webhook_events" not in json.loads(api.calls("POST", "/v1/jobs")[-1].body)


def _event(seq: int, kind: str, stage: str | None, percent: float | None, message: str) -> Event:
    return Event(seq=seq, ts=datetime.now(UTC), kind=EventKind(kind), stage=stage, percent=percent, message=message)


def test_ci_log_prints_each_progress_update_once() -> None:
    watcher = remote._Watcher("job_1", tty=False)
    watcher.console = Console(file=io.StringIO(), width=200, highlight=False)
    job = new_job("job_1", {})
    # What one wait loop sees: each poll drains the events, then shows the job.
    watcher.event(_event(1, "state", None, None, "running (attempt 1 of 3)"))
    watcher.event(_event(2, "progress", "load", 0.0, "load"))
    watcher.update(updated(job, status="running", stage="load", percent=2.0))
    watcher.event(_event(3, "progress", "finetune", 25.0, "finetune"))
    watcher.event(_event(4, "metric", "finetune", 52.0, "epoch 1"))
    watcher.update(updated(job, status="running", stage="finetune", percent=53.0))
    watcher.update(updated(job, status="running", stage="finetune", percent=55.0))
    text = watcher.console.file.getvalue()  # type: ignore[attr-defined]
    lines = text.splitlines()
    assert len(lines) == 4, text  # the state event, then one line per progress update
    assert "job_1 running load 0%" in lines[1] and "job_1 running finetune 25%" in lines[2]
    assert "job_1 running finetune 52% · epoch 1" in lines[3]
    assert sum("epoch 1" in line for line in lines) == 1
