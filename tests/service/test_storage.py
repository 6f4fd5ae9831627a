"""Both storage backends behind one interface: the local directory and S3 (moto's real HTTP server)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobstore.storage import ObjectMissing, Storage
from jobstore.storage.local import LocalStorage
from jobstore.storage.s3 import S3Storage
from tests.service.support import MotoS3


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "store")
        return
    moto: MotoS3 = request.getfixturevalue("moto_s3")
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)
    yield S3Storage(
        f"bucket-{secrets.token_hex(4)}",
        prefix="pk",
        endpoint_url=moto.endpoint,
        region="us-east-1",
        part_size=5 * 1024 * 1024,
        create_bucket=True,
    )


def test_writer_is_invisible_until_commit(storage: Storage) -> None:
    w = storage.open_writer("files/fil_a")
    w.write(b"x" * (6 * 1024 * 1024))  # over one S3 part: a real multipart upload
    assert not storage.exists("files/fil_a")
    w.write(b"tail")
    w.commit()
    assert storage.size("files/fil_a") == 6 * 1024 * 1024 + 4
    aborted = storage.open_writer("files/fil_b")
    aborted.write(b"partial" * 1000)
    aborted.abort()
    assert not storage.exists("files/fil_b")
    assert storage.list("files/") == ["files/fil_a"]


def test_ranges_files_and_prefix_delete(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(bytes(range(256)) * 10)
    storage.put_file("jobs/job_1/a1-x/model.pt", src)
    storage.put_file("jobs/job_1/a1-x/report.json", src)
    storage.put_file("jobs/job_2/a1-y/model.pt", src)
    assert b"".join(storage.iter_range("jobs/job_1/a1-x/model.pt", 10, 19)) == bytes(range(10, 20))
    assert b"".join(storage.iter_range("jobs/job_1/a1-x/model.pt", 2550)) == bytes(range(246, 256))
    dest = tmp_path / "copy"
    storage.get_file("jobs/job_1/a1-x/model.pt", dest)
    assert dest.read_bytes() == src.read_bytes()
    storage.delete_prefix("jobs/job_1/")
    assert storage.list("jobs/") == ["jobs/job_2/a1-y/model.pt"]
    with pytest.raises(ObjectMissing):
        storage.size("jobs/job_1/a1-x/model.pt")
    with pytest.raises(ObjectMissing):
        storage.get_file("jobs/job_1/a1-x/model.pt", dest)
    assert storage.check()


@pytest.mark.parametrize("key", ["../etc/passwd", "files/../../x", "/abs", "files/a b", ""])
def test_keys_cannot_escape(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        LocalStorage(tmp_path).open_writer(key)
