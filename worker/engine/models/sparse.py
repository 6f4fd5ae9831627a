"""The `sparse_state_dict` artifact: a .safetensors file holding only the weights that survived mask pruning.

Layout (version 3, metadata ``prunekit.sparse_layout``; README "Sparse artifacts" has the plain-torch loader):

- metadata ``prunekit.sparse``: JSON ``{name: [shape, dtype, [codes deflated?, low bytes deflated?]]}``;
- ``<name>.__codes``: uint8, one code per stored element in row-major order. Its tables map a code to the
  element's distance from the previous stored one (the first counted from -1) and to its top byte (sign and
  exponent bits of a float: the few values that survive pruning share a handful); coding both in one byte
  costs one inflate per element instead of two. Stored are the elements whose bit pattern is not all zeros
  (-0.0 is kept as a value), plus a zero (the filler code) wherever a run of zeros is longer than a code holds;
- ``<name>.__low``: uint8, the other bytes of every stored element (little-endian, one record per element),
  then one padding byte, so that a reader can take each record with the next record's first byte as one
  integer and overwrite that byte with the top byte;
- ``<name>.__tables``: uint8[512], the gap (1 to 255) of each of the 256 codes, then its top byte;
- codes and low bytes are raw deflate streams where that saves at least MIN_DEFLATE_SAVING, else as they are;
- every other tensor under its own name, as is (dense tensors, integer buffers, tensors too dense to gain).

Versions 1 (bitmask) and 2 (gap bytes + byte planes) are still read (sparse_decode). Version 3 restores 1.4-1.8x
faster than 2 at sizes within 5% of it (docs/benchmarks.md section 9): one inflate per element at most instead of
two (the codes of the sparsest layers, deflating by less than MIN_DEFLATE_SAVING, are not inflated at all), no stack
of byte planes, and torch's scatter_ instead of numpy's fancy store. Restoring gives the same bits (``torch.equal``
on the bit patterns). benchmarks/bench_sparse_storage.py measures the choices.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from worker.engine.errors import InvalidModelError
from worker.engine.models.formats import SPARSE_INDEX as INDEX_KEY
from worker.engine.models.sparse_decode import (
    BYTE,
    CODES,
    GAPS,
    LOW,
    MASK,
    SYMBOLS,
    TABLES,
    VALUES,
    decode_v1,
    decode_v2,
    decode_v3,
)

__all__ = [
    "ALIASES_KEY", "FORMAT", "INDEX_KEY", "LAYOUT", "LAYOUT_KEY", "MIN_DEFLATE_SAVING", "CodeTables", "SparseParts",
    "code_tables", "deflate", "encode_state", "encode_tensor", "read_sparse", "stored_positions", "tied_aliases",
    "write_sparse",
]  # fmt: skip

FORMAT = "sparse_state_dict"
ALIASES_KEY = "prunekit.aliases"  # {name: name stored}: tied tensors, stored once
LAYOUT_KEY, LAYOUT = "prunekit.sparse_layout", "3"  # files without the key are version 1 (bitmask)
_LEVEL = 6  # zlib level: 9 is <1% smaller on resnet18 at 90% and 10x slower to write
# A part deflating by less is stored as is: at 90% on resnet18 the codes of the sparsest layers deflate by ~17%
# and would cost ~40% of the load's inflate time for 0.07 MiB (docs/benchmarks.md section 9 measures the frontier).
MIN_DEFLATE_SAVING = 0.3
_MIN_ELEMENTS = 256  # smaller tensors (biases, norms) are not worth an entry in the index
_MIN_ZERO_SHARE = 0.1  # below this, compressing a tensor costs time for a few percent at most: stored as is
_MIN_SPAN = 2  # a tensor whose top bytes leave codes for gaps of 1 only stores every element: kept dense
# A file that claims more dense bytes than this multiple of its own size is refused before anything is inflated.
_MAX_EXPANSION, _EXPANSION_FLOOR = 4096, 256 * 1024 * 1024
_INT_OF: dict[int, torch.dtype] = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_DTYPES = {"float16", "bfloat16", "float32", "float64"}


@dataclass(frozen=True)
class SparseParts:
    """One tensor's encoded entries ({suffix: bytes}) and which of them (codes, low bytes) are deflated."""

    parts: dict[str, bytes]
    deflated: list[bool]

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.parts.values())


@dataclass(frozen=True)
class CodeTables:
    """Codes of one tensor: `tops` (its distinct top bytes) x gaps 1..`span`, then the filler code (a stored zero)."""

    tops: np.ndarray
    span: int

    @property
    def filler(self) -> int:
        return len(self.tops) * self.span

    def encode(self, gaps: np.ndarray, top_bytes: np.ndarray, is_filler: np.ndarray) -> np.ndarray:
        """The code of each stored element from its gap, its top byte and whether it is a filler."""
        index = np.searchsorted(self.tops, top_bytes)
        return np.where(is_filler, self.filler, index * self.span + gaps - 1).astype(np.uint8)

    def to_bytes(self) -> bytes:
        """256 gaps, then 256 top bytes: the `.__tables` part (codes past the filler decode as fillers)."""
        gap_of = np.full(SYMBOLS, self.span, dtype=np.uint8)
        top_of = np.zeros(SYMBOLS, dtype=np.uint8)
        gap_of[: self.filler] = np.tile(np.arange(1, self.span + 1), len(self.tops))
        top_of[: self.filler] = np.repeat(self.tops, self.span)
        return gap_of.tobytes() + top_of.tobytes()


def code_tables(top_bytes: np.ndarray) -> CodeTables:
    """Tables for the top bytes of a tensor's nonzero elements: every one a class, the longest gaps that leaves."""
    tops = np.unique(top_bytes).astype(np.uint8)
    return CodeTables(tops, (SYMBOLS - 1) // max(len(tops), 1))  # one code kept for the filler


def _bits_set(tensor: torch.Tensor) -> torch.Tensor:
    """Which elements have a nonzero bit pattern (so -0.0 counts as a value and comes back as -0.0)."""
    return tensor.reshape(-1).view(_INT_OF[tensor.element_size()]) != 0


def stored_positions(nonzero: np.ndarray, span: int) -> np.ndarray:
    """Increasing positions to store: the nonzero ones, plus one every `span` inside each longer gap (a filler)."""
    distances = np.diff(nonzero, prepend=-1)
    fillers = (distances - 1) // span
    if not fillers.any():
        return nonzero
    owner = np.repeat(np.arange(len(nonzero)), fillers)  # the position each filler precedes
    step = np.arange(int(fillers.sum())) - np.repeat(np.cumsum(fillers) - fillers, fillers) + 1  # 1, 2, ... per gap
    filled = (nonzero - distances)[owner] + span * step
    return np.sort(np.concatenate([nonzero, filled]))


def deflate(data: bytes, level: int = _LEVEL) -> bytes:
    """The smaller of zlib's usual raw deflate stream and a Huffman-only one (`zlib.decompress(b, -15)` reads both).

    Codes have almost no repeats for LZ77 to find: Huffman-only codes them smaller and inflates faster.
    """
    streams = []
    for strategy in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_HUFFMAN_ONLY):
        packer = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9, strategy)
        streams.append(packer.compress(data) + packer.flush())
    return min(streams, key=len)


def _part(data: bytes, level: int, min_saving: float) -> tuple[bytes, bool]:
    deflated = deflate(data, level)
    if len(deflated) <= (1 - min_saving) * len(data):
        return deflated, True
    return data, False


def encode_tensor(
    tensor: torch.Tensor, level: int = _LEVEL, min_deflate_saving: float = MIN_DEFLATE_SAVING
) -> SparseParts | None:
    """The codes, low bytes and code tables of one floating tensor; None where its top bytes leave no room."""
    width = tensor.element_size()
    flat = tensor.reshape(-1).view(_INT_OF[width]).numpy()
    records = flat.view(np.uint8).reshape(-1, width)
    nonzero = np.flatnonzero(flat)
    tables = code_tables(records[nonzero, -1])
    if tables.span < _MIN_SPAN:
        return None
    positions = stored_positions(nonzero, tables.span)
    gaps = np.diff(positions, prepend=-1)
    codes = tables.encode(gaps, records[positions, -1], flat[positions] == 0)
    low = np.ascontiguousarray(records[positions, :-1]).tobytes() + b"\0"
    parts, deflated = {TABLES: tables.to_bytes()}, []
    for suffix, data in ((CODES, codes.tobytes()), (LOW, low)):
        parts[suffix], is_deflated = _part(data, level, min_deflate_saving)
        deflated.append(is_deflated)
    return SparseParts(parts, deflated)


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


def _blob(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def encode_state(
    state: Mapping[str, torch.Tensor], min_deflate_saving: float = MIN_DEFLATE_SAVING
) -> tuple[dict[str, torch.Tensor], dict[str, list[Any]]]:
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
            encoded = encode_tensor(tensor, min_deflate_saving=min_deflate_saving)
            if encoded is not None and encoded.nbytes < tensor.numel() * tensor.element_size():
                tensors.update({name + suffix: _blob(data) for suffix, data in encoded.parts.items()})
                index[name] = [list(tensor.shape), str(tensor.dtype).removeprefix("torch."), encoded.deflated]
                continue
        tensors[name] = tensor
    return tensors, index


def write_sparse(
    state: Mapping[str, torch.Tensor],
    path: Path,
    metadata: Mapping[str, str],
    min_deflate_saving: float = MIN_DEFLATE_SAVING,
) -> None:
    """Write `state` to `path` in the sparse layout; `metadata` (architecture, ...) goes into the header."""
    from safetensors.torch import save_file

    aliases = tied_aliases(state)
    tensors, index = encode_state({k: v for k, v in state.items() if k not in aliases}, min_deflate_saving)
    header = {
        **metadata, "format": FORMAT, LAYOUT_KEY: LAYOUT, INDEX_KEY: json.dumps(index),
        ALIASES_KEY: json.dumps(aliases),
    }  # fmt: skip
    save_file(tensors, str(path), metadata=header)


# --- reading (the README loader's steps, with every size checked: the file may be an upload) ----------------------


class _Entry(NamedTuple):
    shape: list[int]
    dtype: str
    layout: str
    deflated: list[bool]  # version 3: codes, low bytes; version 2: each byte plane; version 1: none


def _entry(name: str, entry: object, layout: str) -> _Entry:
    size = 2 if layout == "1" else 3
    fields = entry if isinstance(entry, list) and len(entry) == size else [None] * size
    shape, dtype = fields[0], fields[1]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or dtype not in _DTYPES:
        raise InvalidModelError(f"the sparse file's index entry for '{name[:80]}' is not [shape, dtype, parts]")
    if layout == "1":
        return _Entry(shape, dtype, layout, [])
    deflated = fields[2]
    parts = 2 if layout == LAYOUT else getattr(torch, dtype).itemsize
    if not isinstance(deflated, list) or len(deflated) != parts:
        raise InvalidModelError(f"the sparse file's index entry for '{name[:80]}' does not list its parts")
    return _Entry(shape, dtype, layout, [bool(d) for d in deflated])


def _layout(metadata: Mapping[str, str]) -> str:
    layout = metadata.get(LAYOUT_KEY, "1")
    if layout not in ("1", "2", LAYOUT):
        raise InvalidModelError(
            f"the sparse file has layout version '{layout[:20]}', which this prunekit does not know; upgrade prunekit"
        )
    return layout


def _index(metadata: Mapping[str, str] | None) -> dict[str, _Entry]:
    metadata = metadata or {}
    layout = _layout(metadata)
    try:
        raw = json.loads(metadata[INDEX_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise InvalidModelError("the sparse file's index (metadata 'prunekit.sparse') is missing or corrupt") from exc
    if not isinstance(raw, dict):
        raise InvalidModelError("the sparse file's index (metadata 'prunekit.sparse') is not a JSON object")
    return {name: _entry(name, entry, layout) for name, entry in raw.items()}


def _suffixes(entry: _Entry) -> list[str]:
    if entry.layout == "1":
        return [MASK, VALUES]
    if entry.layout == "2":
        return [GAPS, *(f"{BYTE}{i}" for i in range(len(entry.deflated)))]
    return [CODES, LOW, TABLES]


def _resolve_aliases(metadata: Mapping[str, str], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    try:
        aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise InvalidModelError("the sparse file's aliases (metadata 'prunekit.aliases') are corrupt") from exc
    if not isinstance(aliases, dict) or not all(isinstance(v, str) and v in state for v in aliases.values()):
        raise InvalidModelError("the sparse file's aliases name tensors it does not hold")
    return {name: state[target] for name, target in aliases.items() if name not in state}


def _check_expansion(index: Mapping[str, _Entry], file_size: int) -> None:
    claimed = sum(math.prod(e.shape) * getattr(torch, e.dtype).itemsize for e in index.values())
    if claimed > _MAX_EXPANSION * file_size + _EXPANSION_FLOOR:
        raise InvalidModelError(
            f"refused: the sparse file declares {claimed} bytes of weights in a {file_size}-byte file, "
            "more than any pruned model compresses to"
        )


def _check_parts(index: Mapping[str, _Entry], keys: set[str]) -> set[str]:
    """The names of every sparse part; refuses a file whose tensors do not match its index."""
    parts = {name + suffix for name, entry in index.items() for suffix in _suffixes(entry)}
    mismatched = sorted(p for p in parts if p not in keys) or sorted(set(index) & keys)
    if mismatched:
        raise InvalidModelError(f"the sparse file's tensors do not match its index ({mismatched[0][:120]})")
    return parts


def _decode(parts: Any, name: str, entry: _Entry) -> torch.Tensor:
    part = {suffix: parts.get_tensor(name + suffix) for suffix in _suffixes(entry)}
    if any(p.dtype != np.uint8 or p.ndim != 1 for p in part.values()):
        raise InvalidModelError(f"the sparse file's parts of '{name[:80]}' are not flat uint8 tensors")
    if entry.layout == "1":
        return decode_v1(part, entry.shape, entry.dtype)
    decode = decode_v2 if entry.layout == "2" else decode_v3
    return decode(part, entry.shape, entry.dtype, entry.deflated)


def read_sparse(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The dense state_dict a sparse file holds (raises InvalidModelError on anything inconsistent)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        # the uint8 parts through numpy (3x faster than as torch tensors), the stored-as-is tensors through torch
        with safe_open(str(path), framework="pt") as fh, safe_open(str(path), framework="np") as raw:
            index = _index(fh.metadata())
            _check_expansion(index, path.stat().st_size)
            keys = set(fh.keys())
            parts = _check_parts(index, keys)
            state = {k: fh.get_tensor(k) for k in sorted(keys) if k not in parts}
            for name, entry in index.items():
                state[name] = _decode(raw, name, entry)
            state.update(_resolve_aliases(fh.metadata(), state))
    except (SafetensorError, OSError) as exc:
        raise InvalidModelError(f"could not read the sparse safetensors file (truncated or corrupt?): {exc}") from exc
    return state
