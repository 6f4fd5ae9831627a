"""The client subcommands against the fake API: outputs, files and the documented exit codes."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prunekit.cli import remote
from prunekit.cli.exit_codes import ExitCode
from prunekit.cli.main import app
from prunekit.client import PrunekitClient, RetryPolicy
from prunekit.spec.api import Event
from tests.client.fake_bodies import new_job, updated
from tests.client.prunekit_fake_api import FAST_RETRY, GOOD_KEY, FakeApi, FakeServer, Plan

SPEC = "version: 1\nkind: compress\npruning:\n  method: magnitude\n  sparsity: 0.5\ngates:\n  min_speedup: 2.0\n"


@pytest.fixture(autouse=True)
def fast_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI clients with quick retries so failure paths take milliseconds."""

    def make(server: str, api_key: str | None, http_timeout: float = 60.0) -> PrunekitClient:
        return PrunekitClient(server, api_key, timeout=http_timeout, retry=FAST_RETRY)

    monkeypatch.setattr(remote, "_client", make)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "model.pt"
    model.write_bytes(b"PK\x03\x04 fake torchscript" * 100)
    data = tmp_path / "data.npz"
    data.write_bytes(b"PK\x03\x04 fake npz" * 100)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    return {"model": model, "data": data, "spec": spec}


@pytest.fixture()
def run(fake: FakeServer) -> Iterator[object]:
    runner = CliRunner()

    def invoke(*args: str, key: str | None = GOOD_KEY) -> object:
        env = {"PRUNEKIT_SERVER": fake.url}
        if key is not None:
            env["PRUNEKIT_API_KEY"] = key
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    yield invoke


def _submit_args(files: dict[str, Path], *extra: str) -> list[str]:
    return ["submit", str(files["model"]), "--spec", str(files["spec"]), "--data", str(files["data"]), *extra]


def test_submit_without_wait_prints_the_job_id(run, api: FakeApi, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    result = run(*_submit_args(files))
    assert result.exit_code == 0, result.stderr
    job_id = result.stdout.strip()
    assert job_id in api.jobs
    job = api.jobs[job_id]
    assert job.spec["pruning"]["sparsity"] == 0.5
    assert api.files[job.model_file_id].kind == "model"
    assert job.data_file_id is not None and api.files[job.data_file_id].kind == "data"
    assert "uploading model.pt" in result.stderr


def test_submit_wait_success_downloads_and_verifies(run, api: FakeApi, files: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api.plan = Plan(outcome="succeeded")
    out = tmp_path / "out"
    junit = tmp_path / "junit.xml"
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    result = run(
        *_submit_args(
            files,
            "--wait",
            "--out",
            str(out),
            "--junit",
            str(junit),
            "--summary",
            str(summary),
            "--poll-interval",
            "0.1",
        )
    )
    assert result.exit_code == ExitCode.OK, result.stderr
    assert result.stdout.strip() == "succeeded"
    assert (out / "model.safetensors").read_bytes() == api.plan.artifact
    assert json.loads((out / "report.json").read_text())["kind"] == "compress"
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "0"
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "| Validation accuracy |" in text  # appended, not replaced
    assert "verified" in result.stderr
    # Plain progress lines in a non-terminal log.
    assert "running" in result.stderr


def test_gate_missed_exit_code_and_junit(run, api: FakeApi, files: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api.plan = Plan(outcome="gate_missed")
    junit = tmp_path / "junit.xml"
    result = run(*_submit_args(files, "--wait", "--junit", str(junit), "--poll-interval", "0.1"))
    assert result.exit_code == ExitCode.GATE_MISSED, result.stderr
    root = ET.parse(junit).getroot()
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert failed == ["min_speedup"]
    assert "missed a gate" in result.stderr and "min_speedup" in result.stderr


def test_inconclusive_gate_exit_code_and_junit(run, api: FakeApi, files: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A timing gate whose interval straddles its threshold: neither exit 0 nor 3, and a skipped test case.
    api.plan = Plan(outcome="inconclusive")
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    args = ("--wait", "--junit", str(junit), "--summary", str(summary), "--poll-interval", "0.1")
    result = run(*_submit_args(files, *args))
    assert result.exit_code == ExitCode.GATE_INCONCLUSIVE, result.stderr
    root = ET.parse(junit).getroot()
    skipped = [c.get("name") for c in root.iter("testcase") if c.find("skipped") is not None]
    assert skipped == ["min_speedup"] and root.get("failures") == "0" and root.get("skipped") == "1"
    assert "inconclusive" in result.stderr and "straddles" in result.stderr
    assert "inconclusive" in summary.read_text().splitlines()[0]


def test_failed_job_exit_code(run, api: FakeApi, files: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api.plan = Plan(outcome="failed")
    junit = tmp_path / "j.xml"
    summary = tmp_path / "s.md"
    result = run(
        *_submit_args(files, "--wait", "--junit", str(junit), "--summary", str(summary), "--poll-interval", "0.1")
    )
    assert result.exit_code == ExitCode.JOB_FAILED
    assert "invalid_model" in result.stderr
    root = ET.parse(junit).getroot()
    assert root.get("errors") == "1"
    assert "failed" in summary.read_text()


def test_canceled_job_exit_code(run, api: FakeApi, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    api.plan = Plan(outcome="canceled")
    result = run(*_submit_args(files, "--wait", "--poll-interval", "0.1"))
    assert result.exit_code == ExitCode.CANCELED


def test_wait_timeout_exit_code(run, api: FakeApi) -> None:  # type: ignore[no-untyped-def]
    job_id = api.add_job(Plan(outcome="never"))
    result = run("wait", job_id, "--timeout", "0.5", "--poll-interval", "0.1")
    assert result.exit_code == ExitCode.WAIT_TIMEOUT
    assert f"prunekit wait {job_id}" in result.stderr


def test_wrong_api_key_exit_code(run, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    result = run(*_submit_args(files, "--wait"), key="wrong-key")
    assert result.exit_code == ExitCode.AUTH_ERROR
    assert "not authorized" in result.stderr


def test_invalid_spec_exit_code_with_field_path(run, api: FakeApi, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    files["spec"].write_text("pruning:\n  method: magnitude\n  sparsity: 1.5\n")
    result = run(*_submit_args(files))
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "pruning" in result.stderr and "sparsity" in result.stderr
    assert api.requests == []  # nothing was uploaded


def test_missing_model_file_is_invalid_input(run, files: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("submit", str(tmp_path / "nope.pt"), "--spec", str(files["spec"]))
    assert result.exit_code == ExitCode.INVALID_INPUT


def test_server_side_validation_error_is_invalid_input(run, api: FakeApi, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    api.fail("POST", "/v1/jobs", times=1, status=422)
    result = run(*_submit_args(files))
    assert result.exit_code == ExitCode.INVALID_INPUT


def test_unreachable_exit_code(files: dict[str, Path], dead_url: str) -> None:
    result = CliRunner().invoke(app, ["status", "job_x", "--server", dead_url, "--api-key", "k"])
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "cannot reach" in result.stderr


def test_json_output_is_clean(run, api: FakeApi, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    api.plan = Plan(outcome="gate_missed")
    result = run(*_submit_args(files, "--wait", "--json", "--poll-interval", "0.1"))
    assert result.exit_code == ExitCode.GATE_MISSED
    doc = json.loads(result.stdout)  # stdout holds exactly one JSON document
    assert doc["job"]["gate_status"] == "gate_missed"
    assert doc["exit_code"] == ExitCode.GATE_MISSED


def test_json_error_document(run, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    result = run("status", "job_nope", "--json")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert json.loads(result.stdout)["error"]["exit_code"] == ExitCode.INVALID_INPUT


def test_wait_survives_5xx_and_restart(fake: FakeServer, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    def make(server: str, api_key: str | None, http_timeout: float = 60.0) -> PrunekitClient:
        return PrunekitClient(server, api_key, timeout=http_timeout, retry=RetryPolicy(attempts=2, backoff=0.05))

    monkeypatch.setattr(remote, "_client", make)
    job_id = api.add_job(Plan(outcome="succeeded", steps=5))
    api.fail("GET", f"/v1/jobs/{job_id}", times=3, status=502)
    stop, start = threading.Timer(0.3, fake.stop), threading.Timer(1.5, fake.start)
    stop.start()
    start.start()
    try:
        result = CliRunner().invoke(
            app, ["wait", job_id, "--poll-interval", "0.1", "--server", fake.url, "--api-key", GOOD_KEY]
        )
    finally:
        stop.join()
        start.join()
    assert result.exit_code == ExitCode.OK, result.stderr
    assert "retrying" in result.stderr


def test_status_list_cancel(run, api: FakeApi) -> None:  # type: ignore[no-untyped-def]
    done = api.add_job(Plan(outcome="gate_missed", steps=0))
    running = api.add_job(Plan(outcome="never", steps=2))
    result = run("status", done)
    assert result.exit_code == 0
    assert "succeeded" in result.stdout and "gate missed" in result.stdout and "✗ min_speedup" in result.stdout
    result = run("list")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(running) and lines[1].startswith(done)
    result = run("list", "--status", "queued", "--json")
    assert [j["id"] for j in json.loads(result.stdout)["items"]] == [running]
    result = run("cancel", running)
    assert result.exit_code == 0 and result.stdout.strip() == "canceled"
    result = run("cancel", running)
    assert result.exit_code == ExitCode.INVALID_INPUT


def test_status_json_is_the_servers_job_body(run, api: FakeApi) -> None:  # type: ignore[no-untyped-def]
    job_id = api.add_job(Plan(outcome="gate_missed", steps=0))
    result = run("status", job_id, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == api.jobs[job_id].model_dump(mode="json")


def test_download_command(run, api: FakeApi, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job_id = api.add_job(Plan(outcome="succeeded", steps=0))
    api._advance(job_id)
    result = run("download", job_id, "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert Path(doc["path"]).read_bytes() == api.plan.artifact
    pending = api.add_job(Plan(outcome="never"))
    assert run("download", pending, "--out", str(tmp_path)).exit_code == ExitCode.INVALID_INPUT


@pytest.mark.parametrize("fmt", ["json", "markdown", "junit", "html"])
def test_report_formats(run, api: FakeApi, tmp_path: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    job_id = api.add_job(Plan(outcome="gate_missed", steps=0))
    api._advance(job_id)
    result = run("report", job_id, "--format", fmt)
    assert result.exit_code == 0, result.stderr
    if fmt == "json":
        assert json.loads(result.stdout)["status"] == "gate_missed"
    elif fmt == "markdown":
        assert "| Train accuracy |" in result.stdout and "❌" in result.stdout
    elif fmt == "junit":
        assert ET.fromstring(result.stdout).get("failures") == "1"
    else:
        assert "<html" in result.stdout
    out = tmp_path / f"r.{fmt}"
    assert run("report", job_id, "--format", fmt, "--out", str(out)).exit_code == 0
    assert out.stat().st_size > 0


def test_report_not_ready_and_bad_format(run, api: FakeApi) -> None:  # type: ignore[no-untyped-def]
    job_id = api.add_job(Plan(outcome="never"))
    assert run("report", job_id).exit_code == ExitCode.INVALID_INPUT
    assert run("report", job_id, "--format", "pdf").exit_code == ExitCode.INVALID_INPUT


def test_terminal_progress_bar_renders() -> None:
    import io

    from rich.console import Console

    watcher = remote._Watcher("job_1", tty=True)
    watcher.console = Console(file=io.StringIO(), force_terminal=True, width=100, highlight=False)
    with watcher:
        watcher.update(updated(new_job("job_1", {}), status="running", stage="finetune", percent=42.0))
        watcher.event(Event(seq=1, ts=datetime.now(UTC), kind="log", stage=None, percent=None, message="epoch 1"))
    text = watcher.console.file.getvalue()  # type: ignore[attr-defined]
    assert "finetune" in text and "42%" in text and "epoch 1" in text


def test_submit_meta_and_list_filters(run, api: FakeApi, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    result = run(*_submit_args(files, "--meta", "branch=main", "--meta", "pr=3", "--meta", "note=a=b"))
    assert result.exit_code == 0, result.stderr
    job_id = result.stdout.strip()
    assert api.jobs[job_id].metadata == {"branch": "main", "pr": "3", "note": "a=b"}
    other = api.add_job(Plan(outcome="never"), metadata={"branch": "dev"})
    assert "metadata branch=main, pr=3, note=a=b" in run("status", job_id).stdout
    result = run("list", "--meta", "branch=main", "-q")
    assert result.exit_code == 0 and result.stdout == f"{job_id}\n"
    result = run("list", "--status", "queued", "--status", "running", "--kind", "compress", "--quiet")
    assert result.stdout.split() == [other, job_id]
    assert run("list", "--kind", "sweep", "-q").stdout == ""
    query = api.calls("GET", "/v1/jobs")[-2].query
    assert query["status"] == ["queued", "running"] and query["kind"] == ["compress"]


def test_bad_meta_is_invalid_input_before_uploading(run, api: FakeApi, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    result = run(*_submit_args(files, "--meta", "branch"))
    assert result.exit_code == ExitCode.INVALID_INPUT and "key=value" in result.stderr
    assert api.calls("POST", "/v1/files") == []
    assert run("list", "--meta", "=main").exit_code == ExitCode.INVALID_INPUT


def test_delete_command(run, api: FakeApi) -> None:  # type: ignore[no-untyped-def]
    done = api.add_job(Plan(outcome="succeeded", steps=0))
    api._advance(done)
    queued = api.add_job(Plan(outcome="never"))
    result = run("delete", done)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == done and done not in api.jobs
    result = run("delete", queued, "--json")
    assert result.exit_code == ExitCode.INVALID_INPUT and "cannot delete" in result.stderr
    assert json.loads(result.stdout)["error"]["exit_code"] == ExitCode.INVALID_INPUT and queued in api.jobs
    assert run("delete", done).exit_code == ExitCode.INVALID_INPUT  # gone: not found
