"""Files through the client and `prunekit files` against the fake API; quota 429s with Retry-After are waited out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from prunekit.cli import remote
from prunekit.cli.exit_codes import ExitCode
from prunekit.cli.main import app
from prunekit.client import ConflictError, NotFoundError, PrunekitClient, RateLimitedError, RetryPolicy
from tests.client.prunekit_fake_api import FAST_RETRY, GOOD_KEY, FakeApi, FakeServer, SleepLog

# Patient enough for a Retry-After of a few seconds (the SleepLog only records it, sleeping a moment).
PATIENT = RetryPolicy(attempts=4, backoff=0.001, max_backoff=10.0)


def _file(tmp_path: Path, name: str, content: bytes = b"model-bytes") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_list_pages_delete_and_conflict(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    ids = [client.upload_file(_file(tmp_path, f"m{i}.pt"), kind="model").id for i in range(3)]
    job_id = api.add_job()
    api.jobs[job_id] = api.jobs[job_id].model_copy(update={"model_file_id": ids[0]})
    page = client.list_files(limit=2)
    assert [f.id for f in page.items] == ids[::-1][:2] and page.next_cursor
    every = list(client.iter_files(page_size=2))
    assert [f.id for f in every] == ids[::-1]
    assert [f.in_use for f in every] == [False, False, True]
    assert all(f.expires_at is not None and f.expires_at > f.created_at for f in every)
    with pytest.raises(ConflictError) as info:
        client.delete_file(ids[0])
    assert info.value.status == 409 and ids[0] in info.value.detail
    client.delete_file(ids[1])
    assert [f.id for f in client.iter_files()] == [ids[2], ids[0]]
    with pytest.raises(NotFoundError):
        client.get_file(ids[1])


def test_an_upload_over_the_quota_waits_out_retry_after(
    fake: FakeServer, api: FakeApi, sleeps: SleepLog, tmp_path: Path
) -> None:
    api.fail("POST", "/v1/files", times=2, status=429, retry_after="3")
    with PrunekitClient(fake.url, GOOD_KEY, retry=PATIENT, sleep=sleeps) as c:
        info = c.upload_file(_file(tmp_path, "m.pt"))
    assert api.file_bytes[info.id] == b"model-bytes"
    assert len(api.calls("POST", "/v1/files")) == 3
    assert len(sleeps.delays) == 2 and all(d >= 3 for d in sleeps.delays)


def test_a_submit_over_the_quota_waits_and_makes_one_job(
    fake: FakeServer, api: FakeApi, sleeps: SleepLog, tmp_path: Path
) -> None:
    with PrunekitClient(fake.url, GOOD_KEY, retry=PATIENT, sleep=sleeps) as c:
        model = c.upload_file(_file(tmp_path, "m.pt")).id
        api.fail("POST", "/v1/jobs", times=2, status=429, retry_after="2")
        job = c.submit_job({"version": 1}, model)
    calls = api.calls("POST", "/v1/jobs")
    assert len(calls) == 3 and len({r.headers["Idempotency-Key"] for r in calls}) == 1
    assert list(api.jobs) == [job.id]
    assert len(sleeps.delays) == 2 and min(sleeps.delays) >= 2


def test_a_quota_outlasting_the_retries_is_rate_limited(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    api.fail("POST", "/v1/files", times=10, status=429, retry_after="1")
    with pytest.raises(RateLimitedError) as info:
        client.upload_file(_file(tmp_path, "m.pt"))
    assert info.value.status == 429
    assert len(api.calls("POST", "/v1/files")) == FAST_RETRY.attempts


def _cli(fake: FakeServer, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.setattr(remote, "_client", lambda s, k, t=60.0: PrunekitClient(s, k, timeout=t, retry=FAST_RETRY))
    env = {"PRUNEKIT_SERVER": fake.url, "PRUNEKIT_API_KEY": GOOD_KEY}
    return CliRunner().invoke(app, ["files", *args], env=env, catch_exceptions=False)


def test_files_list_and_delete_commands(
    fake: FakeServer, api: FakeApi, client: PrunekitClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _cli(fake, monkeypatch, "list").exit_code == 0
    used = client.upload_file(_file(tmp_path, "used.pt", b"u" * 2048)).id
    free = client.upload_file(_file(tmp_path, "free.npz"), kind="data").id
    job_id = api.add_job()
    api.jobs[job_id] = api.jobs[job_id].model_copy(update={"model_file_id": used})

    listed = _cli(fake, monkeypatch, "list")
    lines = listed.stdout.splitlines()
    assert listed.exit_code == 0 and [line.split()[0] for line in lines] == [free, used]
    assert "in use" in lines[1] and "used.pt" in lines[1] and "2.00 KiB" in lines[1]
    assert "in use" not in lines[0] and lines[0].split()[1] == "data"
    as_json = json.loads(_cli(fake, monkeypatch, "list", "--json", "--limit", "1").stdout)
    assert [f["id"] for f in as_json["items"]] == [free] and as_json["items"][0]["in_use"] is False

    refused = _cli(fake, monkeypatch, "delete", used)
    assert refused.exit_code == ExitCode.INVALID_INPUT and "queued or running job" in refused.stderr
    deleted = _cli(fake, monkeypatch, "delete", free)
    assert deleted.exit_code == 0 and deleted.stdout.strip() == free
    assert list(api.files) == [used]
    assert _cli(fake, monkeypatch, "delete", free).exit_code == ExitCode.INVALID_INPUT  # not found
