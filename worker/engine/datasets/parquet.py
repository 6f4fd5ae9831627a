"""Tables: a `.parquet` file whose input column holds each row's numbers (a list, or one number) and a label column.

The file is read in record batches into an array on disk in the job's scratch folder (memory-mapped), so the
table is never held in memory whole; rows are then loaded by index like any other lazy rows.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit.spec import DataSpec
from prunekit.spec.job import InputSpec
from worker.engine.datasets.rows import LazyRows
from worker.engine.errors import InvalidDataError

__all__ = ["ArrayItems", "Table", "is_parquet", "read_parquet"]

_BATCH_ROWS = 4096


@dataclass
class Table:
    """The rows of a table as lazy rows, with labels (None when the table has no label column)."""

    rows: LazyRows
    labels: torch.Tensor | None
    notes: list[str]


def is_parquet(path: Path) -> bool:
    """Parquet files open with the magic bytes PAR1."""
    with path.open("rb") as fh:
        return fh.read(4) == b"PAR1"


class ArrayItems:
    """Rows of a memory-mapped array on disk, copied out one by one."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[index]))


def _column_values(col: Any, name: str, first_row: int) -> np.ndarray:
    """[rows, ...] numbers of one batch of a column; lists must all be of one length."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if col.null_count:
        row = first_row + int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise InvalidDataError(f"row {row} of column {name!r} is empty (null): fill or drop it")
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            row = first_row + int(np.flatnonzero(lengths != lengths[0])[0])
            raise InvalidDataError(
                f"row {row} of column {name!r} has {lengths[row - first_row]} values but row {first_row} has "
                f"{lengths[0]}: every row needs the same number"
            )
        inner = _column_values(col.flatten(), name, first_row)
        return inner.reshape(len(col), int(lengths[0]) if len(lengths) else 0, *inner.shape[1:])
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
        raise InvalidDataError(f"column {name!r} holds {col.type}, not numbers (or lists of numbers)")
    return col.to_numpy(zero_copy_only=False)


def _batches(path: Path, columns: list[str]) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        start = 0
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns):
            yield start, batch
            start += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise InvalidDataError(f"dataset {path.name} is not a readable .parquet file ({str(exc)[:160]})") from None


def _schema(path: Path) -> tuple[list[str], int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidDataError(f"dataset {path.name} is not a readable .parquet file ({str(exc)[:160]})") from None
    return list(pf.schema_arrow.names), int(pf.metadata.num_rows)


def _labels(values: np.ndarray, name: str, first_row: int) -> np.ndarray:
    if values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0):
        values = values.astype(np.int64)
    if values.dtype.kind not in "iu" or values.ndim != 1:
        raise InvalidDataError(f"label column {name!r} must hold one integer class index per row, got {values.dtype}")
    if len(values) and values.min() < 0:
        row = first_row + int(np.argmin(values))
        raise InvalidDataError(f"row {row} of label column {name!r} is {values.min()}; labels are class indices >= 0")
    return values.astype(np.int64)


def _open_rows(holder: Path, first: np.ndarray, n: int) -> np.memmap:
    integer = first.dtype.kind in "iu" and first.dtype != np.uint8
    dtype = np.int64 if integer else np.float32
    return np.lib.format.open_memmap(holder / "rows.npy", mode="w+", dtype=dtype, shape=(n, *first.shape[1:]))


def _fill(path: Path, spec: DataSpec, labelled: bool, n: int, holder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    columns = [spec.input_field] + ([spec.label_field] if labelled else [])
    rows: np.memmap | None = None
    labels = np.empty(n, dtype=np.int64) if labelled else None
    for start, batch in _batches(path, columns):
        values = _column_values(batch.column(spec.input_field), spec.input_field, start)
        rows = _open_rows(holder, values, n) if rows is None else rows
        if values.shape[1:] != rows.shape[1:]:
            raise InvalidDataError(
                f"row {start} of column {spec.input_field!r} has shape {list(values.shape[1:])} but row 0 has "
                f"{list(rows.shape[1:])}: every row needs the same number of values"
            )
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            row = start + int(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(1))[0])
            raise InvalidDataError(f"row {row} of column {spec.input_field!r} holds NaN or Inf")
        rows[start : start + len(values)] = values
        if labels is not None:
            labels[start : start + len(values)] = _labels(
                batch.column(spec.label_field).to_numpy(), spec.label_field, start
            )
    if rows is None:
        raise InvalidDataError(f"{path.name} has no rows")
    rows.flush()
    return rows, labels


def _shaped(rows: np.ndarray, inputs: Sequence[InputSpec] | None) -> tuple[int, ...]:
    """Each row's shape: the model's declared first input when the row's numbers fill it, else as stored."""
    shape = tuple(inputs[0].shape) if inputs else ()
    stored = rows.shape[1:] or (1,)
    return shape if shape and int(np.prod(shape)) == int(np.prod(stored)) else stored


def read_parquet(path: Path, spec: DataSpec, inputs: Sequence[InputSpec] | None) -> Table:
    """Read `data.input_field` (and `data.label_field`, if present) of every row into a disk-backed array."""
    names, n = _schema(path)
    if spec.input_field not in names:
        raise InvalidDataError(
            f"{path.name} has no column {spec.input_field!r} (it has: {', '.join(names[:8])}); set data.input_field"
        )
    if n == 0:
        raise InvalidDataError(f"{path.name} has no rows")
    labelled = spec.label_field in names
    holder = Path(tempfile.mkdtemp(prefix="prunekit-table-"))
    try:
        array, labels = _fill(path, spec, labelled, n, holder)
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise
    shape = _shaped(array, inputs)
    items = ArrayItems(array.reshape(n, *shape))
    weakref.finalize(items, shutil.rmtree, holder, True)
    dtype = torch.int64 if array.dtype == np.int64 else torch.float32
    note = f"table: {n} rows of column {spec.input_field!r}" + (
        f", labels from {spec.label_field!r}" if labelled else ""
    )
    if not labelled:
        note += f" (no column {spec.label_field!r}: unlabelled)"
    return Table(
        LazyRows(items, torch.arange(n), shape, dtype), torch.from_numpy(labels) if labels is not None else None, [note]
    )
