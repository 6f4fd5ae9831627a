"""Data files read as lazy rows: which reader a file needs, and the `Dataset` it becomes (split as the spec says)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from prunekit.spec import DataSpec
from prunekit.spec.job import InputSpec
from worker.engine.data import Dataset, split_index
from worker.engine.datasets.images import is_image_archive, read_image_folder
from worker.engine.datasets.parquet import is_parquet, read_parquet
from worker.engine.datasets.rows import LazyRows
from worker.engine.errors import InvalidDataError

__all__ = ["read_lazy"]


def _input_name(inputs: Sequence[InputSpec] | None, what: str) -> str:
    if inputs and len(inputs) > 1:
        names = ", ".join(i.name for i in inputs)
        raise InvalidDataError(f"{what} feeds one model input, but the model takes {names}: give .npz arrays instead")
    return inputs[0].name if inputs else "x"


def _split(
    x: LazyRows, y: torch.Tensor | None, spec: DataSpec
) -> tuple[LazyRows, torch.Tensor | None, LazyRows, torch.Tensor | None, str]:
    train_idx, val_idx = split_index(len(x), spec)
    y_train, y_val = (y[train_idx], y[val_idx]) if y is not None else (None, None)
    return x.subset(train_idx), y_train, x.subset(val_idx), y_val, f"seeded split of {len(x)} by val_fraction"


def _images(path: Path, spec: DataSpec, inputs: Sequence[InputSpec] | None, checkpoint: Path | None) -> Dataset:
    name = _input_name(inputs, "an image folder")
    folder = read_image_folder(path, spec, inputs, checkpoint)
    parts: tuple[LazyRows, torch.Tensor | None, LazyRows, torch.Tensor | None, str]
    if folder.val is not None and folder.y_val is not None:
        parts = (folder.train, folder.y_train, folder.val, folder.y_val, "given")
    else:
        parts = _split(folder.train, folder.y_train, spec)
    return Dataset(*parts, notes=folder.notes, input_name=name, class_names=folder.classes)


def _table(path: Path, spec: DataSpec, inputs: Sequence[InputSpec] | None) -> Dataset:
    name = _input_name(inputs, "a .parquet table")
    table = read_parquet(path, spec, inputs)
    if inputs and inputs[0].dtype.startswith("float") and not table.rows.is_floating_point():
        table.rows = table.rows.cast(torch.float32)  # integer columns feeding a float input
    return Dataset(*_split(table.rows, table.labels, spec), notes=table.notes, input_name=name)


def read_lazy(
    path: Path, spec: DataSpec, inputs: Sequence[InputSpec] | None, checkpoint: Path | None
) -> Dataset | None:
    """An image-folder archive or a .parquet table as a Dataset of lazy rows; None for other files.

    `checkpoint`: a Hugging Face checkpoint's folder, whose preprocessor_config.json gives image defaults.
    """
    if is_parquet(path):
        return _table(path, spec, inputs)
    if is_image_archive(path):
        return _images(path, spec, inputs, checkpoint)
    return None
