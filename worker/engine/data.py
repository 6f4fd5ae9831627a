"""Datasets: read `.npz` (no pickles), `.safetensors`, `.jsonl` text, image folders or `.parquet`; split them.

Arrays are read whole; image folders and tables become lazy rows (worker/engine/datasets) loaded batch by batch.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from prunekit.spec import DataSpec
from prunekit.spec.job import InputSpec
from worker.engine.datasets.rows import Rows, as_dtype, subset
from worker.engine.errors import InvalidDataError
from worker.engine.inputs import DEFAULT_FILL, TORCH_DTYPES
from worker.engine.text_data import TextContext, is_text_file, read_text_rows

KNOWN_KEYS = ("x_train", "y_train", "x_val", "y_val", "x")
ACCEPTED = (
    "one .npz (numpy.savez) or .safetensors file with arrays x_train, y_train[, x_val, y_val], or x (unlabelled), "
    "or a .jsonl / .jsonl.gz text file for Hugging Face checkpoints, or a .zip / .tar image folder "
    "(train/<class>/<image>), or a .parquet table"
)


@dataclass
class Dataset:
    """Tensors on CPU, or lazy rows (images, tables); y_* are None for unlabelled data (fidelity, distillation)."""

    x_train: Rows
    y_train: torch.Tensor | None
    x_val: Rows
    y_val: torch.Tensor | None
    split: str  # "given" or "seeded split of N by val_fraction"
    notes: list[str] = field(default_factory=list)  # caveats for the report (e.g. raw uint8 pixel values)
    input_name: str = "x"  # the model input x_train / x_val feed (model.inputs' first)
    extra_train: dict[str, torch.Tensor] = field(default_factory=dict)  # further inputs by name (x_train_<name>)
    extra_val: dict[str, torch.Tensor] = field(default_factory=dict)
    causal_lm: bool = False  # token ids whose targets are the next tokens (no y_*)
    class_names: list[str] | None = None  # image folders: label i is class folder class_names[i]
    features: bool = False  # a model without class outputs: trained toward the original's pooled outputs

    @property
    def labelled(self) -> bool:
        """Labels or next-token targets to train on (else only distillation from the original)."""
        return self.y_train is not None or self.causal_lm

    def train_inputs(self) -> dict[str, Rows]:
        """Every model input of the training split, by name, in the model's order."""
        return {self.input_name: self.x_train, **self.extra_train}

    def val_inputs(self) -> dict[str, Rows]:
        """Every model input of the validation split, by name, in the model's order."""
        return {self.input_name: self.x_val, **self.extra_val}

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        raise InvalidDataError(f"dataset {path.name!r} is a folder, not a file: give {ACCEPTED} (folders are not read)")
    if not path.exists():
        raise InvalidDataError(f"dataset file {path.name!r} not found; give {ACCEPTED}")
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
    tensor = torch.from_numpy(np.ascontiguousarray(arr))
    # Integers stay integers (token ids), as int64; uint8 (image bytes) and bool are read as float32, as before.
    integer = arr.dtype.kind in "iu" and arr.dtype != np.uint8
    tensor = tensor.long() if integer else tensor.float()
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
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


def split_index(n: int, spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) row indices of the seeded split of n rows."""
    n_val = max(1, round(n * spec.val_fraction))
    if n - n_val < 1:
        raise InvalidDataError(f"too few samples ({n}) to split with val_fraction={spec.val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(spec.split_seed))
    return perm[n_val:], perm[:n_val]


def _seeded_split(x: torch.Tensor, y: torch.Tensor | None, spec: DataSpec) -> tuple[torch.Tensor, ...]:
    train_idx, val_idx = split_index(x.shape[0], spec)
    y_train = y[train_idx] if y is not None else None
    y_val = y[val_idx] if y is not None else None
    return x[train_idx], y_train, x[val_idx], y_val  # type: ignore[return-value]


def _text_arrays(
    path: Path, spec: DataSpec, inputs: Sequence[InputSpec] | None, text: TextContext | None
) -> tuple[dict[str, np.ndarray], list[InputSpec], list[str]]:
    """A .jsonl(.gz) file as the arrays an .npz would hold, with the inputs it feeds (token ids, mask)."""
    rows = read_text_rows(path, spec, text or TextContext(None, causal_lm=False))
    ids = rows.inputs["input_ids"]
    high = next((i.high for i in inputs or [] if i.name == "input_ids"), None)
    specs = [
        InputSpec(name=name, shape=list(t.shape[1:]), dtype="int64", high=high if name == "input_ids" else None)
        for name, t in rows.inputs.items()
    ]
    if rows.labels is None:
        arrays = {"x": ids.numpy()}
    else:
        arrays = {"x_train": ids.numpy(), "y_train": rows.labels.numpy()}
        arrays |= {f"x_train_{k}": v.numpy() for k, v in rows.inputs.items() if k != "input_ids"}
    return arrays, specs, rows.notes


def load_dataset(
    path: Path, spec: DataSpec, inputs: Sequence[InputSpec] | None = None, text: TextContext | None = None
) -> Dataset:
    """Read and validate a dataset file for the model's declared inputs; raises InvalidDataError with what to fix.

    `text`: what .jsonl text data needs (the tokenizer's folder, the task); other files ignore it.
    """
    if path.is_file():
        from worker.engine.datasets.readers import read_lazy  # Pillow and pyarrow only for data that needs them

        lazy = read_lazy(path, spec, inputs, text.tokenizer_dir if text is not None else None)
        if lazy is not None:
            return _limit(lazy, spec)
    if path.is_file() and is_text_file(path):
        raw, inputs, text_notes = _text_arrays(path, spec, inputs, text)
        ds = _load_arrays(raw, spec, inputs)
        ds.notes.extend(text_notes)
        ds.causal_lm = text is not None and text.causal_lm
        return ds
    return _load_arrays(_read_arrays(path), spec, inputs)


def _load_arrays(raw: dict[str, np.ndarray], spec: DataSpec, inputs: Sequence[InputSpec] | None) -> Dataset:
    arrays, named = _take_named(raw, inputs or [])
    _check_declared(arrays, named, inputs or [])
    ds = _dataset(arrays, spec)
    ds.notes.extend(_raw_pixel_notes(arrays))
    return _attach_named(ds, arrays, named, spec, inputs or [])


def _raw_pixel_notes(arrays: dict[str, np.ndarray]) -> list[str]:
    """uint8 inputs are fed as their raw 0-255 values: say so, since most image models expect [0, 1] or normalized."""
    notes = []
    for key in ("x_train", "x_val", "x"):
        arr = arrays.get(key)
        if arr is not None and arr.dtype == np.uint8 and arr.size and int(arr.max()) > 1:
            notes.append(
                f"{key} is uint8 (values up to {int(arr.max())}): fed to the model as raw 0-255 floats, not scaled "
                "to [0, 1]; if the model expects scaled or normalized inputs, save them as float32 that way"
            )
    return notes


def _dataset(arrays: dict[str, np.ndarray], spec: DataSpec) -> Dataset:
    """Validate the arrays of a dataset file and split them."""
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
    y_train = ds.y_train[:k] if ds.y_train is not None else None
    return replace(ds, x_train=subset(ds.x_train, slice(0, k)), y_train=y_train)


# --- named inputs (model.inputs) ----------------------------------------------------------------------------------
# Input <name> reads x_train_<name> and x_val_<name> (or x_<name> for unlabelled data); the first input may use plain
# x_train / x_val / x. attention_mask (all ones) and token_type_ids (all zeros) may be left out.
_BASES = ("x_train", "x_val", "x")
Named = dict[str, dict[str, np.ndarray]]  # base key -> input name -> array


def _take_named(arrays: dict[str, np.ndarray], inputs: Sequence[InputSpec]) -> tuple[dict[str, np.ndarray], Named]:
    """The arrays with the first input's under x_train / x_val / x, and the other inputs' apart."""
    rest = dict(arrays)
    named: Named = {base: {} for base in _BASES}
    for i, spec in enumerate(inputs):
        for base in _BASES:
            key = f"{base}_{spec.name}"
            if key not in rest:
                continue
            if i > 0:
                named[base][spec.name] = rest.pop(key)
            elif base in rest:
                raise InvalidDataError(f"dataset has both '{base}' and '{key}' for model input '{spec.name}'; give one")
            else:
                rest[base] = rest.pop(key)
    return rest, named


def _arrays_of(i: int, spec: InputSpec, arrays: dict[str, np.ndarray], named: Named) -> dict[str, np.ndarray]:
    if i == 0:
        return {base: arrays[base] for base in _BASES if base in arrays}
    return {f"{base}_{spec.name}": named[base][spec.name] for base in _BASES if spec.name in named[base]}


def _check_declared(arrays: dict[str, np.ndarray], named: Named, inputs: Sequence[InputSpec]) -> None:
    """Float arrays cannot feed integer or bool inputs, nor ids reach past the declared [low, high)."""
    for i, spec in enumerate(inputs):
        for key, arr in _arrays_of(i, spec, arrays, named).items():
            if spec.dtype.startswith("float") or arr.size == 0:
                continue
            if arr.dtype.kind == "f":
                raise InvalidDataError(
                    f"{key} holds {arr.dtype} values but model input '{spec.name}' is {spec.dtype}: save token "
                    "ids and masks as integer arrays (e.g. numpy int64)"
                )
            low, high = spec.low or 0, spec.high
            if high is not None and (int(arr.min()) < low or int(arr.max()) >= high):
                raise InvalidDataError(
                    f"{key} has values from {int(arr.min())} to {int(arr.max())} but model input '{spec.name}' "
                    f"takes [{low}, {high}) (model.inputs low/high, e.g. the vocabulary size)"
                )


def _bases(arrays: dict[str, np.ndarray]) -> tuple[str, str]:
    """Which keys the other inputs' arrays go with: (train, val); equal when the split is seeded."""
    if "x" in arrays:
        return "x", "x"
    return ("x_train", "x_val") if "x_val" in arrays else ("x_train", "x_train")


def _named_rows(key: str, arr: np.ndarray, rows: int) -> torch.Tensor:
    tensor = _as_inputs(key, arr)
    if len(tensor) != rows:
        raise InvalidDataError(f"{key} has {len(tensor)} rows but the first input's array has {rows}")
    return tensor


def _split_named(
    spec: InputSpec, ds: Dataset, arrays: dict[str, np.ndarray], named: Named, data_spec: DataSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) rows of one further input, split and limited as the first input's were."""
    train_base, val_base = _bases(arrays)
    if spec.name not in named[train_base]:
        if spec.name not in DEFAULT_FILL:
            raise InvalidDataError(
                f"dataset has no '{train_base}_{spec.name}' for model input '{spec.name}' (only "
                f"{' and '.join(DEFAULT_FILL)} may be left out)"
            )
        fill = DEFAULT_FILL[spec.name]
        return torch.full((len(ds.x_train), *spec.shape), fill), torch.full((len(ds.x_val), *spec.shape), fill)
    x = _named_rows(f"{train_base}_{spec.name}", named[train_base][spec.name], len(arrays[train_base]))
    if val_base == train_base:
        train_idx, val_idx = split_index(len(x), data_spec)
        return x[train_idx][: len(ds.x_train)], x[val_idx]
    if spec.name not in named[val_base]:
        raise InvalidDataError(f"dataset has '{train_base}_{spec.name}' but no '{val_base}_{spec.name}'")
    return x[: len(ds.x_train)], _named_rows(f"{val_base}_{spec.name}", named[val_base][spec.name], len(ds.x_val))


def _attach_named(
    ds: Dataset, arrays: dict[str, np.ndarray], named: Named, data_spec: DataSpec, inputs: Sequence[InputSpec]
) -> Dataset:
    """Every declared input of both splits, in its declared dtype."""
    if not inputs:
        return ds
    used = set(_bases(arrays))
    stray = sorted(f"{base}_{name}" for base in _BASES if base not in used for name in named[base])
    if stray:
        raise InvalidDataError(
            f"unexpected keys {stray}: each input's arrays go with the first input's (x_train_<name> with "
            "x_train, x_val_<name> with x_val, x_<name> with x)"
        )
    cast = {s.name: TORCH_DTYPES[s.dtype] for s in inputs}
    split = {s.name: _split_named(s, ds, arrays, named, data_spec) for s in inputs[1:]}
    first = inputs[0].name
    ds.input_name, ds.x_train, ds.x_val = first, as_dtype(ds.x_train, cast[first]), as_dtype(ds.x_val, cast[first])
    ds.extra_train = {k: tr.to(cast[k]) for k, (tr, _) in split.items()}
    ds.extra_val = {k: va.to(cast[k]) for k, (_, va) in split.items()}
    return ds


def check_labels_fit(ds: Dataset, num_outputs: int) -> None:
    """Labels must index the model's outputs; raises InvalidDataError naming the range."""
    for name, y in (("y_train", ds.y_train), ("y_val", ds.y_val)):
        if y is not None and len(y) and int(y.max()) >= num_outputs:
            top = int(y.max())
            if ds.class_names is not None:
                raise InvalidDataError(
                    f"the image folder has {len(ds.class_names)} classes but the model has {num_outputs} outputs "
                    f"(class folder {ds.class_names[top]!r} is label {top}): give at most {num_outputs} classes"
                )
            raise InvalidDataError(
                f"{name} has label {top} but the model has {num_outputs} outputs (labels must be < {num_outputs})"
            )
