"""Datasets: read `.npz` (no pickles) or `.safetensors`, validate them, split train/validation."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prunekit.spec import DataSpec
from worker.engine.errors import InvalidDataError

KNOWN_KEYS = ("x_train", "y_train", "x_val", "y_val", "x")


@dataclass
class Dataset:
    """Tensors on CPU; y_* are None for unlabelled data (fidelity and distillation only)."""

    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_val: torch.Tensor
    y_val: torch.Tensor | None
    split: str  # "given" or "seeded split of N by val_fraction"

    @property
    def labelled(self) -> bool:
        return self.y_train is not None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    with path.open("rb") as fh:
        head = fh.read(8)
    if head[:4] == b"PK\x03\x04":
        return _read_npz(path)
    if len(head) == 8:
        return _read_safetensors(path)
    raise InvalidDataError(f"dataset {path.name} is empty or truncated")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        # allow_pickle=False raises ValueError for object arrays: they would need unpickling.
        raise InvalidDataError(f"dataset {path.name}: {exc} (object arrays are refused; save numeric arrays)") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidDataError(f"dataset {path.name} is not a readable .npz file: {exc}") from None


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidDataError(f"dataset {path.name} is neither .npz nor readable .safetensors: {exc}") from None


def _as_inputs(name: str, arr: np.ndarray) -> torch.Tensor:
    if arr.dtype.kind not in "fiub":
        raise InvalidDataError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise InvalidDataError(
            f"{name} must have a batch dimension and at least one feature dimension, got {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise InvalidDataError(f"{name} is empty")
    tensor = torch.from_numpy(np.ascontiguousarray(arr)).float()
    if not torch.isfinite(tensor).all():
        raise InvalidDataError(f"{name} contains NaN or Inf values")
    return tensor


def _as_labels(name: str, arr: np.ndarray, n: int) -> torch.Tensor:
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise InvalidDataError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InvalidDataError(f"{name} must be one-dimensional (one class index per sample), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InvalidDataError(f"{name} has {arr.shape[0]} labels but the inputs have {n} samples")
    if arr.min() < 0:
        raise InvalidDataError(f"{name} has negative labels (min {arr.min()}); labels must be class indices >= 0")
    return torch.from_numpy(arr.astype(np.int64))


def _seeded_split(x: torch.Tensor, y: torch.Tensor | None, spec: DataSpec) -> tuple[torch.Tensor, ...]:
    n = x.shape[0]
    n_val = max(1, round(n * spec.val_fraction))
    if n - n_val < 1:
        raise InvalidDataError(f"too few samples ({n}) to split with val_fraction={spec.val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(spec.split_seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    y_train = y[train_idx] if y is not None else None
    y_val = y[val_idx] if y is not None else None
    return x[train_idx], y_train, x[val_idx], y_val  # type: ignore[return-value]


def load_dataset(path: Path, spec: DataSpec) -> Dataset:
    """Read and validate a dataset file; raises InvalidDataError with what to fix."""
    arrays = _read_arrays(path)
    unknown = sorted(set(arrays) - set(KNOWN_KEYS))
    if unknown:
        raise InvalidDataError(f"unknown keys {unknown} in dataset; expected x_train, y_train[, x_val, y_val] or x")
    if "x_train" not in arrays and "x" not in arrays:
        raise InvalidDataError("dataset needs 'x_train' (with 'y_train') or 'x' (unlabelled)")
    if "x" in arrays and "x_train" in arrays:
        raise InvalidDataError("dataset has both 'x' and 'x_train'; give one")
    if "x" in arrays:
        x = _as_inputs("x", arrays["x"])
        x_tr, _, x_va, _ = _seeded_split(x, None, spec)
        return _limit(Dataset(x_tr, None, x_va, None, f"seeded split of {len(x)} by val_fraction"), spec)
    if "y_train" not in arrays:
        raise InvalidDataError("dataset has 'x_train' but no 'y_train'; unlabelled data goes under key 'x'")
    x_train = _as_inputs("x_train", arrays["x_train"])
    y_train = _as_labels("y_train", arrays["y_train"], x_train.shape[0])
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise InvalidDataError("give both 'x_val' and 'y_val', or neither (then a seeded split is made)")
    if "x_val" in arrays:
        x_val = _as_inputs("x_val", arrays["x_val"])
        y_val = _as_labels("y_val", arrays["y_val"], x_val.shape[0])
        if x_val.shape[1:] != x_train.shape[1:]:
            raise InvalidDataError(
                f"x_val sample shape {tuple(x_val.shape[1:])} != x_train's {tuple(x_train.shape[1:])}"
            )
        return _limit(Dataset(x_train, y_train, x_val, y_val, "given"), spec)
    x_tr, y_tr, x_va, y_va = _seeded_split(x_train, y_train, spec)
    return _limit(Dataset(x_tr, y_tr, x_va, y_va, f"seeded split of {len(x_train)} by val_fraction"), spec)


def _limit(ds: Dataset, spec: DataSpec) -> Dataset:
    if spec.max_train_samples is None or len(ds.x_train) <= spec.max_train_samples:
        return ds
    k = spec.max_train_samples
    return Dataset(ds.x_train[:k], ds.y_train[:k] if ds.y_train is not None else None, ds.x_val, ds.y_val, ds.split)


def check_labels_fit(ds: Dataset, num_outputs: int) -> None:
    """Labels must index the model's outputs; raises InvalidDataError naming the range."""
    for name, y in (("y_train", ds.y_train), ("y_val", ds.y_val)):
        if y is not None and len(y) and int(y.max()) >= num_outputs:
            top = int(y.max())
            raise InvalidDataError(
                f"{name} has label {top} but the model has {num_outputs} outputs (labels must be < {num_outputs})"
            )
