"""Large files go through the resumable protocol: chunks streamed from disk, a dropped connection resumed at the
server's offset, progress reported, and the multipart upload kept for small files and older servers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prunekit.cli.main import app
from prunekit.client import PrunekitClient
from prunekit.client import client as client_module
from tests.client.prunekit_fake_api import FAST_RETRY, GOOD_KEY, FakeApi, FakeServer, SleepLog

CHUNK = 64 * 1024
DATA = os.urandom(3 * CHUNK + 1234)


@pytest.fixture()
def chunked(fake: FakeServer, sleeps: SleepLog) -> PrunekitClient:
    return PrunekitClient(fake.url, GOOD_KEY, timeout=10, retry=FAST_RETRY, sleep=sleeps, resumable_threshold=CHUNK)


def _model(tmp_path: Path, data: bytes = DATA) -> Path:
    path = tmp_path / "big.pt"
    path.write_bytes(data)
    return path


def test_a_large_file_goes_in_chunks_with_progress(chunked: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    info = chunked.upload_file(_model(tmp_path), kind="model", on_progress=lambda s, t: seen.append((s, t)))
    assert api.file_bytes[info.id] == DATA and info.sha256 == hashlib.sha256(DATA).hexdigest()
    puts = api.calls("PUT", r"/v1/uploads/.+")
    assert [p.headers["Content-Range"] for p in puts] == [
        f"bytes {a}-{min(a + CHUNK, len(DATA)) - 1}/{len(DATA)}" for a in range(0, len(DATA), CHUNK)
    ]
    complete = api.calls("POST", r"/v1/uploads/.+/complete")
    assert len(complete) == 1 and hashlib.sha256(DATA).hexdigest().encode() in complete[0].body
    assert seen[-1] == (len(DATA), len(DATA)) and all(t == len(DATA) for _, t in seen)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert not api.calls("POST", "/v1/files")


def test_a_connection_cut_mid_chunk_resumes_at_the_servers_offset(
    chunked: PrunekitClient, api: FakeApi, tmp_path: Path
) -> None:
    api.fail("PUT", r"/v1/uploads/.+", action="sever", truncate_at=CHUNK // 2)  # half the first chunk, then cut
    seen: list[int] = []
    info = chunked.upload_file(_model(tmp_path), on_progress=lambda s, t: seen.append(s))
    assert api.file_bytes[info.id] == DATA  # sha256 checked by the fake on complete as well
    assert len(api.calls("GET", r"/v1/uploads/[^/]+")) == 1  # asked for the offset once
    ranges = [p.headers["Content-Range"] for p in api.calls("PUT", r"/v1/uploads/.+")]
    assert ranges[0].startswith("bytes 0-")  # the severed request is not recorded; the chunk is sent again
    assert len(ranges) == 4
    assert 0 in seen and seen[-1] == len(DATA)  # progress went back to the server's offset, then on to the end


def test_a_lost_request_and_a_5xx_are_retried_from_the_offset(
    chunked: PrunekitClient, api: FakeApi, tmp_path: Path
) -> None:
    api.fail("PUT", r"/v1/uploads/.+", action="drop")
    api.fail("PUT", r"/v1/uploads/.+", action="status", status=503)
    info = chunked.upload_file(_model(tmp_path))
    assert api.file_bytes[info.id] == DATA
    assert len(api.calls("GET", r"/v1/uploads/[^/]+")) == 2


def test_an_older_server_gets_one_multipart_request(chunked: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    api.uploads_enabled = False
    seen: list[int] = []
    info = chunked.upload_file(_model(tmp_path), on_progress=lambda s, t: seen.append(s))
    assert api.file_bytes[info.id] == DATA
    assert len(api.calls("POST", "/v1/files")) == 1 and not api.calls("PUT", r"/v1/uploads/.+")
    assert seen and seen[-1] == len(DATA)


def test_a_small_file_stays_multipart(chunked: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    info = chunked.upload_file(_model(tmp_path, b"x" * (CHUNK - 1)))
    assert info.size == CHUNK - 1 and not api.calls("POST", "/v1/uploads")


def test_files_upload_prints_progress_lines_in_ci_logs(
    fake: FakeServer, api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "RESUMABLE_THRESHOLD", CHUNK)
    env = {"PRUNEKIT_SERVER": fake.url, "PRUNEKIT_API_KEY": GOOD_KEY}
    result = CliRunner().invoke(app, ["files", "upload", str(_model(tmp_path))], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    file_id = result.stdout.strip()
    assert api.file_bytes[file_id] == DATA and api.calls("PUT", r"/v1/uploads/.+")
    lines = [line for line in result.stderr.splitlines() if "% of" in line]
    assert lines[0].startswith("big.pt: 10% of") and lines[-1].startswith("big.pt: 100% of") and len(lines) == 10
