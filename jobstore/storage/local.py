"""Storage in a local directory (a shared volume works across hosts)."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from jobstore.storage.base import CHUNK, ObjectMissing, check_key, write_file


class LocalWriter:
    """Writes to a temp file in the same filesystem, renamed into place on commit."""

    def __init__(self, root: Path, key: str) -> None:
        self._final = root / check_key(key)
        self._tmp = root / ".tmp" / f"{uuid.uuid4().hex}.part"
        self._tmp.parent.mkdir(parents=True, exist_ok=True)
        self._fh: BinaryIO | None = open(self._tmp, "wb")  # noqa: SIM115  (closed in commit/abort)

    def write(self, data: bytes) -> None:
        assert self._fh is not None, "writer already closed"
        self._fh.write(data)

    def commit(self) -> None:
        assert self._fh is not None, "writer already closed"
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, self._final)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._tmp.unlink(missing_ok=True)


class LocalChunkWriter:
    """Writes one chunk in place into an upload's staged file; bytes of a failed try are overwritten by the next."""

    def __init__(self, path: Path, offset: int) -> None:
        try:
            # Only the first chunk may create the file: a later one finding none means the staging was cleaned up.
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if offset == 0 else 0), 0o600)
        except FileNotFoundError:
            raise ObjectMissing(path.name) from None
        self._fh: BinaryIO | None = os.fdopen(fd, "r+b")
        if os.fstat(fd).st_size < offset:
            self.abort()
            raise ObjectMissing(path.name)
        self._fh.seek(offset)

    def write(self, data: bytes) -> None:
        assert self._fh is not None, "writer already closed"
        self._fh.write(data)

    def commit(self) -> dict[str, Any]:
        assert self._fh is not None, "writer already closed"
        self._fh.flush()
        os.fsync(self._fh.fileno())  # acknowledged bytes survive a crash
        self._fh.close()
        self._fh = None
        return {}

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def open_writer(self, key: str) -> LocalWriter:
        return LocalWriter(self.root, key)

    def put_file(self, key: str, path: Path) -> None:
        write_file(self.open_writer(key), path)

    def get_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise ObjectMissing(key)
        shutil.copyfile(src, dest)

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def iter_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        try:
            fh = open(self._path(key), "rb")  # noqa: SIM115  (closed by the generator)
        except FileNotFoundError:
            raise ObjectMissing(key) from None

        def gen() -> Iterator[bytes]:
            with fh:
                fh.seek(start)
                remaining = None if end is None else end - start + 1
                while remaining is None or remaining > 0:
                    chunk = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                    if not chunk:
                        return
                    if remaining is not None:
                        remaining -= len(chunk)
                    yield chunk

        return gen()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        base = self._path(prefix.rstrip("/"))
        if base.is_dir():
            shutil.rmtree(base, ignore_errors=True)

    def _staged(self, upload_id: str) -> Path:
        # In .tmp as a .part file: the stale-part cleanup removes an abandoned one (upload_part_stale_after).
        return self.root / ".tmp" / f"{check_key(upload_id)}.part"

    def begin_staged(self, upload_id: str, key: str) -> str | None:
        check_key(key)
        path = self._staged(upload_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        return None

    def open_chunk(self, upload_id: str, key: str, ref: str | None, offset: int, number: int) -> LocalChunkWriter:
        return LocalChunkWriter(self._staged(upload_id), offset)

    def finish_staged(
        self, upload_id: str, key: str, ref: str | None, parts: Sequence[dict[str, Any]], size: int
    ) -> None:
        staged, final = self._staged(upload_id), self._path(key)
        try:
            with open(staged, "r+b") as fh:
                if os.fstat(fh.fileno()).st_size < size:
                    raise ObjectMissing(upload_id)
                fh.truncate(size)  # drop what a failed last try wrote past the end
                os.fsync(fh.fileno())
        except FileNotFoundError:
            raise ObjectMissing(upload_id) from None
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)

    def abort_staged(self, upload_id: str, key: str, ref: str | None) -> None:
        self._staged(upload_id).unlink(missing_ok=True)

    def check(self) -> bool:
        probe = self.root / ".tmp" / f"probe-{uuid.uuid4().hex}"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            return True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
