"""The `sparse_state_dict` artifact: a .safetensors file holding only the weights that survived mask pruning.

Layout (version 1; README "Sparse artifacts" has the plain-torch loader):

- metadata ``prunekit.sparse``: JSON ``{name: [shape, dtype]}`` of every tensor stored sparse;
- ``<name>.__mask``: uint8, zlib of ``np.packbits(bits != 0, bitorder="little")`` over the tensor in row-major
  order, one bit per element (bit set: the element's bit pattern is not all zeros, so -0.0 is kept as a value);
- ``<name>.__values``: uint8, zlib of the set elements' little-endian bytes, byte-planes split (every element's
  first byte, then every second byte, ...: the sign/exponent bytes of floats compress, the mantissas barely);
- every other tensor under its own name, as is (dense tensors, integer buffers, tensors too dense to gain).

Restoring gives the same bits: ``torch.equal`` on the bit patterns, not within a tolerance. N:M (2:4) masks use
the same bitmask: a 2-bit index per kept element costs the same 4 bits per group of 4 that the bitmask does
before deflate, and the deflated bitmask is smaller. benchmarks/bench_sparse_storage.py measures the choices.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.engine.errors import InvalidModelError
from worker.engine.models.formats import SPARSE_INDEX as INDEX_KEY

__all__ = [
    "ALIASES_KEY", "FORMAT", "INDEX_KEY", "SparseParts", "decode_tensor", "encode_state", "encode_tensor",
    "read_sparse", "tied_aliases", "write_sparse",
]  # fmt: skip

FORMAT = "sparse_state_dict"
ALIASES_KEY = "prunekit.aliases"  # {name: name stored}: tied tensors, stored once
MASK, VALUES = ".__mask", ".__values"
_LEVEL = 6  # zlib level: 9 is <1% smaller on resnet18 at 90% and 10x slower to write
_MIN_ELEMENTS = 256  # smaller tensors (biases, norms) are not worth an entry in the index
_MIN_ZERO_SHARE = 0.1  # below this, compressing a tensor costs time for a few percent at most: stored as is
# A file that claims more dense bytes than this multiple of its own size is refused before anything is inflated.
_MAX_EXPANSION, _EXPANSION_FLOOR = 4096, 256 * 1024 * 1024
_INT_OF: dict[int, torch.dtype] = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_DTYPES = {"float16", "bfloat16", "float32", "float64"}

SparseParts = tuple[bytes, bytes]  # (deflated bitmask, deflated byte-planes of the values)


def _bits_set(tensor: torch.Tensor) -> torch.Tensor:
    """Which elements have a nonzero bit pattern (so -0.0 counts as a value and comes back as -0.0)."""
    return tensor.reshape(-1).view(_INT_OF[tensor.element_size()]) != 0


def encode_tensor(tensor: torch.Tensor, level: int = _LEVEL) -> SparseParts:
    """The deflated little-endian bitmask and byte-plane-split values of one floating tensor."""
    keep = _bits_set(tensor)
    mask = np.packbits(keep.numpy(), bitorder="little").tobytes()
    values = tensor.reshape(-1)[keep]
    planes = values.view(torch.uint8).view(-1, tensor.element_size()).t().contiguous()
    return zlib.compress(mask, level), zlib.compress(planes.numpy().tobytes(), level)


def _worth_encoding(tensor: torch.Tensor) -> bool:
    if not tensor.is_floating_point() or str(tensor.dtype).removeprefix("torch.") not in _DTYPES:
        return False
    if tensor.numel() < _MIN_ELEMENTS:
        return False
    return float((~_bits_set(tensor)).float().mean()) >= _MIN_ZERO_SHARE


def tied_aliases(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """{name: earlier name} for entries that are the same tensor (tied embeddings): stored once, named twice."""
    first: dict[tuple[Any, ...], str] = {}
    aliases: dict[str, str] = {}
    for name, value in state.items():
        key = (value.device, value.dtype, value.data_ptr(), value.storage_offset(), value.shape, value.stride())
        if value.numel() and key in first:
            aliases[name] = first[key]
        else:
            first.setdefault(key, name)
    return aliases


def encode_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[Any]]]:
    """The file's tensors and its index: each tensor sparse where that is smaller, else as is."""
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, list[Any]] = {}
    seen: set[tuple[int, int]] = set()
    for name, value in state.items():
        tensor = value.detach().cpu().contiguous()
        storage = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
        if storage in seen or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()  # safetensors refuses tensors that share or view into another's storage
        seen.add(storage)
        if _worth_encoding(tensor):
            mask, values = encode_tensor(tensor)
            if len(mask) + len(values) < tensor.numel() * tensor.element_size():
                tensors[name + MASK] = torch.frombuffer(bytearray(mask), dtype=torch.uint8)
                tensors[name + VALUES] = torch.frombuffer(bytearray(values), dtype=torch.uint8)
                index[name] = [list(tensor.shape), str(tensor.dtype).removeprefix("torch.")]
                continue
        tensors[name] = tensor
    return tensors, index


def write_sparse(state: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]) -> None:
    """Write `state` to `path` in the sparse layout; `metadata` (architecture, ...) goes into the header."""
    from safetensors.torch import save_file

    aliases = tied_aliases(state)
    tensors, index = encode_state({k: v for k, v in state.items() if k not in aliases})
    header = {
        **metadata, "format": FORMAT, "bit_order": "little", INDEX_KEY: json.dumps(index),
        ALIASES_KEY: json.dumps(aliases),
    }  # fmt: skip
    save_file(tensors, str(path), metadata=header)


# --- reading (the README loader's steps, with every size checked: the file may be an upload) ----------------------


def _inflate(blob: torch.Tensor, size: int, what: str) -> bytes:
    """zlib-inflate exactly `size` bytes, never more (a small blob can claim gigabytes)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(blob.numpy().tobytes(), size + 1)
    except zlib.error as exc:
        raise InvalidModelError(f"the sparse file's {what} is corrupt ({exc})") from exc
    if len(out) != size or not inflater.eof:
        raise InvalidModelError(f"the sparse file's {what} does not have the size its index declares")
    return out


def decode_tensor(mask_blob: torch.Tensor, values_blob: torch.Tensor, shape: list[int], dtype: str) -> torch.Tensor:
    """One dense tensor from its bitmask and values entries; raises InvalidModelError on any mismatch."""
    torch_dtype: torch.dtype = getattr(torch, dtype)
    numel, itemsize = math.prod(shape), torch_dtype.itemsize
    packed = np.frombuffer(_inflate(mask_blob, (numel + 7) // 8, "bitmask"), dtype=np.uint8)
    bits = np.unpackbits(packed, bitorder="little")
    if bits[numel:].any():
        raise InvalidModelError("the sparse file's bitmask has bits set past the end of its tensor")
    kept = int(np.bitwise_count(packed).sum())
    planes = np.frombuffer(_inflate(values_blob, kept * itemsize, "values"), dtype=np.uint8)
    # numpy, on the bit patterns as integers: calloc'd zeros and flatnonzero of a bool view are 2-4x faster than torch
    ints = np.dtype(f"<i{itemsize}")
    dense = np.zeros(numel, dtype=ints)
    dense[np.flatnonzero(bits[:numel].view(np.bool_))] = planes.reshape(itemsize, -1).T.copy().view(ints).ravel()
    return torch.from_numpy(dense).view(torch_dtype).reshape(shape)


def _index(metadata: Mapping[str, str] | None) -> dict[str, tuple[list[int], str]]:
    try:
        raw = json.loads((metadata or {})[INDEX_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise InvalidModelError("the sparse file's index (metadata 'prunekit.sparse') is missing or corrupt") from exc
    if not isinstance(raw, dict):
        raise InvalidModelError("the sparse file's index (metadata 'prunekit.sparse') is not a JSON object")
    index: dict[str, tuple[list[int], str]] = {}
    for name, entry in raw.items():
        shape, dtype = entry if isinstance(entry, list) and len(entry) == 2 else (None, None)
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or dtype not in _DTYPES:
            raise InvalidModelError(f"the sparse file's index entry for '{name[:80]}' is not [shape, dtype]")
        index[name] = (shape, dtype)
    return index


def _resolve_aliases(metadata: Mapping[str, str], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    try:
        aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise InvalidModelError("the sparse file's aliases (metadata 'prunekit.aliases') are corrupt") from exc
    if not isinstance(aliases, dict) or not all(isinstance(v, str) and v in state for v in aliases.values()):
        raise InvalidModelError("the sparse file's aliases name tensors it does not hold")
    return {name: state[target] for name, target in aliases.items() if name not in state}


def _check_expansion(index: Mapping[str, tuple[list[int], str]], file_size: int) -> None:
    claimed = sum(math.prod(shape) * getattr(torch, dtype).itemsize for shape, dtype in index.values())
    if claimed > _MAX_EXPANSION * file_size + _EXPANSION_FLOOR:
        raise InvalidModelError(
            f"refused: the sparse file declares {claimed} bytes of weights in a {file_size}-byte file, "
            "more than any pruned model compresses to"
        )


def read_sparse(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The dense state_dict a sparse file holds (raises InvalidModelError on anything inconsistent)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            index = _index(fh.metadata())
            _check_expansion(index, path.stat().st_size)
            parts = {n + s for n in index for s in (MASK, VALUES)}
            keys = set(fh.keys())
            missing = sorted(p for p in parts if p not in keys)
            if missing or set(index) & keys:
                raise InvalidModelError(
                    f"the sparse file's tensors do not match its index ({(missing or sorted(set(index) & keys))[0]})"
                )
            state = {k: fh.get_tensor(k) for k in sorted(keys) if k not in parts}
            for name, (shape, dtype) in index.items():
                state[name] = decode_tensor(fh.get_tensor(name + MASK), fh.get_tensor(name + VALUES), shape, dtype)
            state.update(_resolve_aliases(fh.metadata(), state))
    except (SafetensorError, OSError) as exc:
        raise InvalidModelError(f"could not read the sparse safetensors file (truncated or corrupt?): {exc}") from exc
    return state
