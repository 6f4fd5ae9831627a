"""The storage interface: objects addressed by server-made keys, written atomically."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

CHUNK = 1024 * 1024
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_.\-]+)*$")


class StorageError(Exception):
    """A storage operation failed (missing object, backend error)."""


class ObjectMissing(StorageError):
    pass


def check_key(key: str) -> str:
    """Keys are built from server ids; refuse anything that could escape a prefix."""
    if not _KEY_RE.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class ObjectWriter(Protocol):
    """Streams one object; nothing is visible under its key before `commit`."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class ChunkWriter(Protocol):
    """Streams one chunk of a staged (resumable) upload; `commit` makes it durable and returns its part record."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> dict[str, Any]: ...

    def abort(self) -> None: ...


def write_file(writer: ObjectWriter, path: Path) -> None:
    """Stream a local file into `writer` and commit it; abort on any failure so nothing half-written appears."""
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                writer.write(chunk)
        writer.commit()
    except BaseException:
        writer.abort()
        raise


class Storage(Protocol):
    """Where files, artifacts and reports live; the local directory or S3 implement it."""

    def open_writer(self, key: str) -> ObjectWriter: ...

    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file atomically."""

    def get_file(self, key: str, dest: Path) -> None:
        """Download an object to a local path."""

    def size(self, key: str) -> int: ...

    def iter_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes start..end (inclusive; None = to the end), in chunks."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...

    def check(self) -> bool:
        """Readiness: the backend can be reached and written."""
        ...

    # Staged uploads: chunks of one future object, sent over many requests, published at once.

    def begin_staged(self, upload_id: str, key: str) -> str | None:
        """Prepare the staging of an upload that becomes `key`; returns the backend's handle (S3: its UploadId)."""
        ...

    def open_chunk(self, upload_id: str, key: str, ref: str | None, offset: int, number: int) -> ChunkWriter:
        """A writer of chunk `number` (from 1), which starts at byte `offset`; ObjectMissing if the staging is gone."""
        ...

    def finish_staged(
        self, upload_id: str, key: str, ref: str | None, parts: Sequence[dict[str, Any]], size: int
    ) -> None:
        """Publish the staged chunks as the object `key`, atomically; ObjectMissing if the staging is gone."""

    def abort_staged(self, upload_id: str, key: str, ref: str | None) -> None:
        """Discard what was staged (nothing happens if it is already gone)."""
