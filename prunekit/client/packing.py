"""A model folder (a Hugging Face `save_pretrained` directory) packed into one uncompressed .tar for upload.

The tar is written file by file to a temporary file, so a folder of several GB is never held in memory;
links (a Hugging Face cache snapshot links to its blobs) are followed, since the server refuses links.
"""

from __future__ import annotations

import contextlib
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["FolderNotAModel", "packed_model"]


class FolderNotAModel(ValueError):
    """The folder is not a checkpoint the server can read."""


def _pack(folder: Path, target: Path) -> None:
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT, dereference=True) as tf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tf.add(path, f"{folder.name}/{path.relative_to(folder).as_posix()}", recursive=False)


@contextlib.contextmanager
def packed_model(path: Path) -> Iterator[Path]:
    """`path` itself for a file; for a folder with a config.json, a temporary .tar of it (removed afterwards)."""
    if not path.is_dir():
        yield path
        return
    if not (path / "config.json").is_file():
        raise FolderNotAModel(
            f"{path} is a folder without a config.json: give a model file, or the folder model.save_pretrained() wrote"
        )
    with tempfile.TemporaryDirectory(prefix="prunekit-pack-") as tmp:
        target = Path(tmp) / f"{path.resolve().name or 'model'}.tar"
        _pack(path, target)
        yield target
