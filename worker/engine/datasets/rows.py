"""Rows of model inputs that are a tensor or are loaded on demand, and batches of them through a DataLoader.

The engine indexes data by rows: `rows[index]` gives a tensor of those rows whatever `rows` is. A `LazyRows`
holds only which items it is (indices into an item dataset: decoded images, rows of a file on disk), so a
split or a limit costs no copy and nothing holds the whole dataset in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader

__all__ = ["ItemSource", "LazyRows", "RowSource", "Rows", "as_dtype", "row_batches", "subset"]


@runtime_checkable
class RowSource(Protocol):
    """What the engine needs of a split's inputs: its length, its shape and dtype, and rows by index."""

    @property
    def shape(self) -> torch.Size: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor: ...


Rows = torch.Tensor | RowSource


class ItemSource(Protocol):
    """A map-style dataset of one tensor per item (all of one shape and dtype)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> torch.Tensor: ...


class LazyRows:
    """Some items of an `ItemSource`, loaded only when indexed; indexing returns a stacked tensor."""

    def __init__(self, items: ItemSource, index: torch.Tensor, sample_shape: Sequence[int], dtype: torch.dtype) -> None:
        self.items = items
        self.index = index.long()
        self._sample = torch.Size(sample_shape)
        self._dtype = dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self._sample))

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def dim(self) -> int:
        return 1 + len(self._sample)

    def is_floating_point(self) -> bool:
        return self._dtype.is_floating_point

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        picked = self.index[index].reshape(-1)
        if len(picked) == 0:
            return torch.empty((0, *self._sample), dtype=self._dtype)
        return torch.stack([self.items[int(i)] for i in picked]).to(self._dtype)

    def subset(self, index: slice | torch.Tensor) -> LazyRows:
        """These rows as a new view (no item is loaded)."""
        return LazyRows(self.items, self.index[index], self._sample, self._dtype)

    def cast(self, dtype: torch.dtype) -> LazyRows:
        """The same rows, converted to `dtype` when loaded."""
        return LazyRows(self.items, self.index, self._sample, dtype)


def as_dtype(rows: Rows, dtype: torch.dtype) -> Rows:
    """The rows converted to `dtype` (lazy rows when they are loaded)."""
    if isinstance(rows, torch.Tensor):
        return rows.to(dtype)
    return rows.cast(dtype) if isinstance(rows, LazyRows) else rows


def subset(rows: Rows, index: slice | torch.Tensor) -> Rows:
    """Some rows: a tensor's are copied (as before), a LazyRows' stay unloaded."""
    return rows.subset(index) if isinstance(rows, LazyRows) else rows[index]


class _InputRows(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Every input's rows by one list of positions: a DataLoader's batch sampler hands it whole batches."""

    def __init__(self, inputs: Mapping[str, Rows]) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        picked = torch.tensor(indices, dtype=torch.long)
        return {k: v[picked] for k, v in self.inputs.items()}


def _whole(batch: Any) -> Any:
    return batch  # __getitems__ already stacked the batch


def _positions(batch: slice | torch.Tensor, n: int) -> list[int]:
    if isinstance(batch, slice):
        return list(range(*batch.indices(n)))
    return [int(i) for i in batch]


def row_batches(
    inputs: Mapping[str, Rows], batches: Sequence[slice | torch.Tensor]
) -> Iterator[dict[str, torch.Tensor]]:
    """The rows of every input, batch by batch: tensors indexed directly, lazy rows loaded through a DataLoader.

    The DataLoader runs in this process (num_workers=0): the job's sandbox gives workers no shared memory.
    """
    if all(isinstance(v, torch.Tensor) for v in inputs.values()):
        for batch in batches:
            yield {k: v[batch] for k, v in inputs.items()}
        return
    n = len(next(iter(inputs.values())))
    sampler = [_positions(b, n) for b in batches]
    yield from DataLoader(_InputRows(inputs), batch_sampler=sampler, collate_fn=_whole, num_workers=0)
