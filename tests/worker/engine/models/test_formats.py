"""Format detection from content, never from the file name."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from worker.engine.errors import InvalidModelError
from worker.engine.models.formats import detect_format


@pytest.mark.parametrize(
    ("key", "fmt"),
    [
        ("torchscript", "torchscript"),
        ("export", "export"),
        ("torch.save zip", "state_dict"),
        ("torch.save legacy", "state_dict"),
        ("safetensors", "state_dict"),
    ],
)
def test_detects_format_from_content_despite_misleading_extension(files: dict[str, Path], key: str, fmt: str) -> None:
    detected = detect_format(files[key])
    assert detected.format == fmt
    expected_container = {"torchscript": "torchscript zip", "export": "pt2 zip"}.get(key, key)
    assert detected.container == expected_container


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    with pytest.raises(InvalidModelError, match="empty"):
        detect_format(path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(4096).replace(b"PK", b"QK").replace(b"\x80", b"\x81"))
    with pytest.raises(InvalidModelError, match="not a recognized model format"):
        detect_format(path)


@pytest.mark.parametrize("key", ["torchscript", "export", "torch.save zip"])
def test_truncated_zip_is_actionable(files: dict[str, Path], tmp_path: Path, key: str) -> None:
    data = files[key].read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError, match=r"truncated or corrupt.*upload the complete file"):
        detect_format(path)


def test_unrelated_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(InvalidModelError, match=r"not a recognized model format.*readme\.txt"):
        detect_format(path)


def test_safetensors_with_corrupt_header(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    header = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]'  # unterminated JSON
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(InvalidModelError, match="safetensors but its JSON header is corrupt"):
        detect_format(path)
