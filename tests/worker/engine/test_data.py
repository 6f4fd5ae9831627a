"""Datasets: each bad input gets an error that says what to fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from prunekit.spec import DataSpec
from worker.engine.data import Dataset, check_labels_fit, load_dataset
from worker.engine.errors import InvalidDataError


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _x(n: int = 20) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32)


def test_given_split_is_kept(tmp_path: Path) -> None:
    y = np.arange(20) % 10
    ds = load_dataset(_npz(tmp_path / "d.npz", x_train=_x(), y_train=y, x_val=_x(5), y_val=y[:5]), DataSpec())
    assert ds.split == "given" and len(ds.x_train) == 20 and len(ds.x_val) == 5 and ds.labelled


def test_seeded_split_is_reproducible(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x_train=_x(), y_train=np.arange(20) % 10)
    a, b = load_dataset(path, DataSpec(val_fraction=0.25)), load_dataset(path, DataSpec(val_fraction=0.25))
    assert len(a.x_val) == 5 and bool((a.x_val == b.x_val).all())
    c = load_dataset(path, DataSpec(val_fraction=0.25, split_seed=1))
    assert not bool((a.x_val == c.x_val).all())


def test_safetensors_dataset(tmp_path: Path) -> None:
    path = tmp_path / "d.st"
    save_file({"x_train": _x(), "y_train": (np.arange(20) % 10).astype(np.int64)}, str(path))
    assert load_dataset(path, DataSpec()).labelled


def test_unlabelled(tmp_path: Path) -> None:
    ds = load_dataset(_npz(tmp_path / "d.npz", x=_x()), DataSpec())
    assert not ds.labelled and ds.y_val is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": _x(), "y_train": np.arange(19)}, "19 labels"),
        ({"x_train": _x(), "y_train": -np.ones(20, dtype=np.int64)}, "negative"),
        ({"x_train": _x(), "y_train": np.full(20, 0.5)}, "integer class labels"),
        ({"x_train": _x()}, "no 'y_train'"),
        ({"features": _x()}, "unknown keys"),
        ({"x_train": np.full((20, 3), np.nan, dtype=np.float32), "y_train": np.zeros(20, dtype=np.int64)}, "NaN"),
        ({"x_train": _x(), "y_train": np.zeros(20, dtype=np.int64), "x_val": _x(3)}, "both 'x_val' and 'y_val'"),
        (
            {
                "x_train": _x(),
                "y_train": np.zeros(20, dtype=np.int64),
                "x_val": np.zeros((3, 4), np.float32),
                "y_val": np.zeros(3, dtype=np.int64),
            },
            "sample shape",
        ),
    ],
)
def test_bad_datasets(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidDataError, match=message):
        load_dataset(_npz(tmp_path / "d.npz", **arrays), DataSpec())


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.array([object()], dtype=object), y_train=np.zeros(1))
    with pytest.raises(InvalidDataError, match="object arrays are refused"):
        load_dataset(path, DataSpec())


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"\x00" * 64])
def test_corrupt_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    with pytest.raises(InvalidDataError):
        load_dataset(path, DataSpec())


def test_label_range_against_model_outputs(tmp_path: Path) -> None:
    ds: Dataset = load_dataset(_npz(tmp_path / "d.npz", x_train=_x(), y_train=np.arange(20)), DataSpec())
    with pytest.raises(InvalidDataError, match=r"has label 1\d but the model has 10 outputs"):
        check_labels_fit(ds, 10)
    check_labels_fit(ds, 20)
