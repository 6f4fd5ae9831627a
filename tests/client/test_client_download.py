"""Artifact downloads: sha256 verification, Range resume into a .part file, and the awkward cases."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from prunekit.client import IntegrityError, NotReadyError, PrunekitClient
from tests.client.prunekit_fake_api import FakeApi, Plan

CONTENT = bytes(range(256)) * 2048  # 512 KiB


def _done_job(client: PrunekitClient, api: FakeApi, **plan: object) -> str:
    job_id = api.add_job(Plan(outcome="succeeded", steps=0, artifact=CONTENT, **plan))  # type: ignore[arg-type]
    client.wait(job_id, poll_interval=0.01)
    return job_id


def test_download_verifies_sha(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = _done_job(client, api)
    result = client.download_artifact(job_id, tmp_path)
    assert result.path == tmp_path / "model.safetensors"
    assert result.path.read_bytes() == CONTENT
    assert result.sha256 == hashlib.sha256(CONTENT).hexdigest()
    assert not result.resumed
    assert not (tmp_path / "model.safetensors.part").exists()


def test_interrupted_download_resumes_with_range(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = _done_job(client, api)
    api.fail("GET", f"/v1/jobs/{job_id}/artifact", times=1, action="truncate", truncate_at=200_000)
    result = client.download_artifact(job_id, tmp_path)
    assert result.path.read_bytes() == CONTENT
    assert result.resumed
    calls = api.calls("GET", f"/v1/jobs/{job_id}/artifact")
    assert len(calls) == 2
    assert "Range" not in calls[0].headers
    start = int(calls[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 200_000
    assert calls[1].headers["If-Range"] == f'"{hashlib.sha256(CONTENT).hexdigest()}"'


def test_part_file_from_an_earlier_run_is_resumed(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = _done_job(client, api)
    (tmp_path / "model.safetensors.part").write_bytes(CONTENT[:1000])
    result = client.download_artifact(job_id, tmp_path)
    assert result.resumed and result.path.read_bytes() == CONTENT
    assert api.calls("GET", f"/v1/jobs/{job_id}/artifact")[0].headers["Range"] == "bytes=1000-"


def test_server_ignoring_range_still_gives_the_right_file(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = _done_job(client, api)
    api.ignore_range = True
    (tmp_path / "model.safetensors.part").write_bytes(CONTENT[:1000])
    result = client.download_artifact(job_id, tmp_path)
    assert result.path.read_bytes() == CONTENT and not result.resumed


def test_stale_part_with_wrong_bytes_is_replaced(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = _done_job(client, api)
    # Same length prefix, other bytes: the resumed file fails the sha check, one clean download fixes it.
    (tmp_path / "model.safetensors.part").write_bytes(b"\xff" * 5000)
    result = client.download_artifact(job_id, tmp_path)
    assert result.path.read_bytes() == CONTENT
    assert len(api.calls("GET", f"/v1/jobs/{job_id}/artifact")) == 2


def test_part_longer_than_the_artifact_starts_over(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = _done_job(client, api)
    (tmp_path / "model.safetensors.part").write_bytes(CONTENT + b"extra")
    assert client.download_artifact(job_id, tmp_path).path.read_bytes() == CONTENT


def test_sha_mismatch_raises_and_keeps_nothing(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = _done_job(client, api, wrong_sha=True)
    with pytest.raises(IntegrityError):
        client.download_artifact(job_id, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_verified_file_is_not_downloaded_again(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = _done_job(client, api)
    client.download_artifact(job_id, tmp_path)
    again = client.download_artifact(job_id, tmp_path)
    assert again.skipped
    assert len(api.calls("GET", f"/v1/jobs/{job_id}/artifact")) == 1


def test_artifact_name_cannot_escape_the_directory(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = _done_job(client, api, artifact_name="../../evil.pt")
    out = tmp_path / "out"
    result = client.download_artifact(job_id, out)
    assert result.path == out / "evil.pt"
    assert result.path.read_bytes() == CONTENT


def test_no_artifact_yet(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = api.add_job(Plan(outcome="never"))
    with pytest.raises(NotReadyError):
        client.download_artifact(job_id, tmp_path)


def test_repeated_interruptions(client: PrunekitClient, api: FakeApi, tmp_path: Path) -> None:
    job_id = _done_job(client, api)
    for _ in range(3):
        api.fail("GET", f"/v1/jobs/{job_id}/artifact", times=1, action="truncate", truncate_at=50_000)
    result = client.download_artifact(job_id, tmp_path)
    assert result.path.read_bytes() == CONTENT
