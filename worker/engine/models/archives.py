"""Safe, streamed extraction of uploaded `.tar`, `.tar.gz` and `.zip` archives into a folder of the job.

Every member is checked before a byte of it is written: names that are absolute or climb out of the folder,
links, devices and duplicate names are refused, and the member count and the bytes actually inflated (not
the sizes the archive declares) are capped, so a bomb stops at the cap. Files are created with O_EXCL and
O_NOFOLLOW inside a folder the extraction made itself, so nothing lands outside it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from worker.engine.errors import InvalidModelError, UnsafeModelError

__all__ = ["ArchiveKind", "ArchiveLimits", "archive_kind", "extract_archive", "pack_folder"]

ArchiveKind = Literal["zip", "tar", "tar.gz"]
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on one archive: enough for a 7B model in bf16 (about 14 GB in a few dozen shards)."""

    max_members: int = 10_000
    max_total_bytes: int = 64 * 1024**3


def archive_kind(path: Path) -> ArchiveKind | None:
    """zip, tar or tar.gz from the file's first bytes (never its name); None for anything else."""
    with path.open("rb") as fh:
        head = fh.read(512)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _safe_parts(name: str) -> tuple[str, ...]:
    """The member's path parts, or UnsafeModelError for names that could land outside the folder."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        raise UnsafeModelError(f"refused: the archive member {name[:80]!r} has an absolute path; nothing was written")
    parts = tuple(p for p in PurePosixPath(clean).parts if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise UnsafeModelError(f"refused: the archive member {name[:80]!r} climbs out of its folder; nothing was run")
    if any("\x00" in p for p in parts):
        raise UnsafeModelError("refused: an archive member name holds a NUL byte")
    return parts


class _Budget:
    """Counts members and inflated bytes against the limits while extracting."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits, self.members, self.bytes = limits, 0, 0
        self.seen: set[tuple[str, ...]] = set()

    def member(self, parts: tuple[str, ...], name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise InvalidModelError(f"refused: the archive has more than {self.limits.max_members} members")
        key = tuple(p.casefold() for p in parts)
        if key in self.seen:
            raise UnsafeModelError(f"refused: the archive holds {name[:80]!r} twice; nothing was run")
        self.seen.add(key)

    def add(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_total_bytes:
            gib = self.limits.max_total_bytes / 1024**3
            raise InvalidModelError(f"refused: the archive expands to more than {gib:.0f} GiB")


def _write_member(root: Path, parts: tuple[str, ...], src: IO[bytes], budget: _Budget) -> None:
    parent = root.joinpath(*parts[:-1])
    parent.mkdir(parents=True, exist_ok=True)
    if parent.resolve() != root.resolve().joinpath(*parts[:-1]):
        raise UnsafeModelError("refused: an archive folder resolves outside the extraction folder")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(parent / parts[-1], flags, 0o600), "wb") as out:
        while chunk := src.read(_CHUNK):
            budget.add(len(chunk))
            out.write(chunk)


def _tar_members(path: Path, kind: ArchiveKind) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    mode = "r|gz" if kind == "tar.gz" else "r|"
    try:
        with tarfile.open(path, mode=mode) as tf:  # type: ignore[call-overload]
            for info in tf:
                yield info, tf
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidModelError(f"the {kind} archive is truncated or corrupt ({exc}): upload it again") from None


def _extract_tar(path: Path, kind: ArchiveKind, root: Path, budget: _Budget) -> None:
    for info, tf in _tar_members(path, kind):
        parts = _safe_parts(info.name)
        if info.issym() or info.islnk():
            raise UnsafeModelError(f"refused: the archive member {info.name[:80]!r} is a link; nothing was written")
        if not (info.isfile() or info.isdir()):
            raise UnsafeModelError(f"refused: the archive member {info.name[:80]!r} is not a regular file or folder")
        if not parts:
            continue
        budget.member(parts, info.name)
        if info.isdir():
            root.joinpath(*parts).mkdir(parents=True, exist_ok=True)
            continue
        src = tf.extractfile(info)
        if src is not None:
            _write_member(root, parts, src, budget)


def _extract_zip(path: Path, root: Path, budget: _Budget) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidModelError(f"the zip archive is truncated or corrupt ({exc}): upload it again") from None
    with zf:
        for info in zf.infolist():
            parts = _safe_parts(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeModelError(f"refused: the archive member {info.filename[:80]!r} is a link")
            if info.flag_bits & 0x1:
                raise InvalidModelError(f"the archive member {info.filename[:80]!r} is encrypted")
            if not parts:
                continue
            budget.member(parts, info.filename)
            if info.is_dir():
                root.joinpath(*parts).mkdir(parents=True, exist_ok=True)
                continue
            try:
                with zf.open(info) as src:
                    _write_member(root, parts, src, budget)
            except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
                raise InvalidModelError(f"the zip member {info.filename[:80]!r} cannot be read ({exc})") from None


def extract_archive(path: Path, dest: Path, limits: ArchiveLimits | None = None) -> Path:
    """Extract into the new folder `dest`; returns the folder holding the content (a single top folder unwrapped).

    On any refusal `dest` is removed again, so a refused archive leaves nothing behind.
    """
    kind = archive_kind(path)
    if kind is None:
        raise InvalidModelError("not a .tar, .tar.gz or .zip archive")
    dest.mkdir(parents=True, exist_ok=False)
    budget = _Budget(limits or ArchiveLimits())
    try:
        if kind == "zip":
            _extract_zip(path, dest, budget)
        else:
            _extract_tar(path, kind, dest, budget)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    entries = list(dest.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def pack_folder(folder: Path, target: Path, kind: ArchiveKind, arcname: str = "model") -> None:
    """Write every file of `folder` into a new archive at `target`, under the top folder `arcname`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for p in files:
                zf.write(p, f"{arcname}/{p.relative_to(folder).as_posix()}")
        return
    # compresslevel 1: safetensors weights barely deflate, and level 9 costs minutes on a multi-GB model.
    with _open_tar_for_writing(target, kind) as tf:
        for p in files:
            tf.add(p, f"{arcname}/{p.relative_to(folder).as_posix()}", recursive=False)


def _open_tar_for_writing(target: Path, kind: ArchiveKind) -> tarfile.TarFile:
    if kind == "tar.gz":
        return tarfile.open(target, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=1)
    return tarfile.open(target, "w", format=tarfile.PAX_FORMAT)
