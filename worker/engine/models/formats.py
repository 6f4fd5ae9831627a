"""Model format detection from the file's content (magic bytes, zip entries), never from its name."""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from worker.engine.errors import InvalidModelError, UnsafeModelError

SPARSE_INDEX = "prunekit.sparse"  # the metadata key of worker/engine/models/sparse.py's index

__all__ = [
    "Container", "DetectedFormat", "ModelFormat", "check_zip_bomb", "detect_format", "torch_archive_records",
    "zip_entries",
]  # fmt: skip

ModelFormat = Literal["torchscript", "export", "state_dict", "huggingface"]
Container = Literal[
    "safetensors", "sparse safetensors", "torch.save zip", "torch.save legacy", "torchscript zip", "pt2 zip",
    "huggingface zip", "huggingface tar", "huggingface tar.gz",
]  # fmt: skip

# A safetensors header above this is not a model header but garbage (the format caps it at 100 MB too).
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# Compressed entries that would expand more than this (and past a small floor) are refused unread.
_BOMB_RATIO, _BOMB_MIN_BYTES = 100, 16 * 1024 * 1024
_EXPECTED = (
    "expected a TorchScript file (torch.jit.save), a torch.export program (torch.export.save, .pt2), "
    "a state_dict saved with torch.save, a .safetensors file, or a .tar / .tar.gz / .zip of a Hugging Face "
    "save_pretrained folder"
)


@dataclass(frozen=True)
class DetectedFormat:
    format: ModelFormat
    container: Container
    # Zip entries with the archive's top-level folder stripped ("data.pkl", "code/...", "models/model.json").
    entries: tuple[str, ...] = field(default=(), repr=False)
    archive_prefix: str = ""


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def zip_entries(zf: zipfile.ZipFile) -> tuple[str, list[str]]:
    """The archive's top-level folder (torch writes every entry under one) and the entries relative to it."""
    names = zf.namelist()
    prefixes = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(prefixes) == 1 and all("/" in n for n in names):
        prefix = prefixes.pop()
        return prefix, [n.split("/", 1)[1] for n in names]
    return "", names


def torch_archive_records(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The entries as torch's reader sees them; refuses archives it would read differently from zipfile.

    torch takes the archive folder from the first entry and looks records up case-insensitively, so entries
    outside that folder and names that differ only in case are ways to show a scanner other code than torch runs.
    """
    infos = zf.infolist()
    if not infos or "/" not in infos[0].filename:
        raise InvalidModelError("not a torch archive: its first entry is not inside a folder")
    folder = infos[0].filename.split("/", 1)[0] + "/"
    seen: set[str] = set()
    for info in infos:
        if not info.filename.startswith(folder):
            raise UnsafeModelError(
                f"refused: the archive has entries outside its folder '{folder}' ({info.filename[:80]}), which "
                "torch would not read the way they look; nothing was run"
            )
        key = info.filename.casefold()
        if key in seen:
            raise UnsafeModelError(
                f"refused: the archive holds two entries named '{info.filename[:80]}' (ignoring case); nothing was run"
            )
        seen.add(key)
    return infos


def check_zip_bomb(zf: zipfile.ZipFile, size: int) -> None:
    """Refuse archives whose declared expansion is out of proportion to the file (before anything is inflated)."""
    for info in zf.infolist():
        if info.compress_type == zipfile.ZIP_STORED:
            continue  # torch writes every record stored; stored entries cannot expand
        ratio = info.file_size // max(info.compress_size, 1)
        if info.file_size > _BOMB_MIN_BYTES and ratio > _BOMB_RATIO:
            raise InvalidModelError(
                f"refused: the archive entry {info.filename[:80]} would expand {ratio}x "
                f"(to {_human_bytes(info.file_size)} from a {_human_bytes(size)} file); torch never writes compressed "
                "records, so this is not a model saved by torch"
            )
    declared = sum(info.file_size for info in zf.infolist())
    if declared > _BOMB_RATIO * size + _BOMB_MIN_BYTES:
        raise InvalidModelError(
            f"refused: the archive declares {_human_bytes(declared)} of content in a {_human_bytes(size)} file"
        )


def _classify_zip(path: Path, size: int) -> DetectedFormat:
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip_bomb(zf, size)
            prefix, entries = zip_entries(zf)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidModelError(
            f"the file starts like a zip archive (as torch.save, torch.jit.save and torch.export.save write them) "
            f"but it is truncated or corrupt ({exc}; {_human_bytes(size)} received): upload the complete file again"
        ) from exc
    names = set(entries)
    if "constants.pkl" in names or any(e.startswith("code/") for e in entries):
        if "data.pkl" not in names:
            raise InvalidModelError("the zip looks like TorchScript (code/, constants.pkl) but has no data.pkl")
        return DetectedFormat("torchscript", "torchscript zip", tuple(entries), prefix)
    if "archive_format" in names or any(e.startswith("models/") and e.endswith(".json") for e in entries):
        return DetectedFormat("export", "pt2 zip", tuple(entries), prefix)
    if "data.pkl" in names:
        return DetectedFormat("state_dict", "torch.save zip", tuple(entries), prefix)
    if "config.json" in names or any(e.count("/") == 1 and e.endswith("/config.json") for e in entries):
        # extraction checks every member (worker/engine/models/archives.py), whatever else the zip holds
        return DetectedFormat("huggingface", "huggingface zip", tuple(entries), prefix)
    shown = ", ".join(sorted(entries)[:6])
    raise InvalidModelError(f"not a recognized model format: a zip archive with entries {shown} ...; {_EXPECTED}")


def _is_tar(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(262)
    return head[257:262] == b"ustar"


def _safetensors_header(head: bytes, size: int, path: Path) -> dict[str, object] | None:
    """The JSON header of a safetensors file, or None when the file is not one."""
    if len(head) < 9:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or n > min(size - 8, _MAX_SAFETENSORS_HEADER) or head[8:9] != b"{":
        return None
    with open(path, "rb") as fh:
        fh.seek(8)
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelError(f"the file looks like safetensors but its JSON header is corrupt: {exc}") from exc
    return header if isinstance(header, dict) else None


def detect_format(path: str | os.PathLike[str]) -> DetectedFormat:
    """Detect a model file's format from its content; raises InvalidModelError when it is none we read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise InvalidModelError(f"cannot read the model file: {exc.strerror or exc}") from exc
    if size == 0:
        raise InvalidModelError(f"the model file is empty (0 bytes); {_EXPECTED}")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _classify_zip(path, size)
    if head.startswith(b"\x1f\x8b"):
        return DetectedFormat("huggingface", "huggingface tar.gz")  # the content is checked when it is extracted
    if _is_tar(path):
        return DetectedFormat("huggingface", "huggingface tar")
    header = _safetensors_header(head, size, path)
    if header is not None:
        # prunekit's sparse layout (worker/engine/models/sparse.py) is a state_dict too, read through its index
        meta = header.get("__metadata__")
        sparse = isinstance(meta, dict) and SPARSE_INDEX in meta
        return DetectedFormat("state_dict", "sparse safetensors" if sparse else "safetensors")
    # torch.save's legacy (non-zip) format is a pickle stream; protocol 2+ streams start with PROTO (0x80) + version.
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return DetectedFormat("state_dict", "torch.save legacy")
    if zipfile.is_zipfile(path):  # a zip with a preamble (rare, but valid)
        return _classify_zip(path, size)
    raise InvalidModelError(
        f"not a recognized model format: the file ({_human_bytes(size)}) starts with bytes {head[:8].hex(' ')}; "
        f"{_EXPECTED}"
    )
