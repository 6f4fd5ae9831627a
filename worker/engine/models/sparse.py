"""The `sparse_state_dict` artifact: a .safetensors file holding only the weights that survived mask pruning.

Layout (version 2, metadata ``prunekit.sparse_layout``; README "Sparse artifacts" has the plain-torch loader):

- metadata ``prunekit.sparse``: JSON ``{name: [shape, dtype, [plane i deflated?, ...]]}`` of every sparse tensor;
- ``<name>.__gaps``: uint8, deflated (zlib; Huffman-only where smaller) distances (1 to 255) between consecutive
  stored elements in row-major order, the first counted from -1. Stored are the elements whose bit pattern is not
  all zeros (so -0.0 is kept as a value), plus a zero every 255 positions inside a longer run of zeros, so that
  every distance fits a byte and restoring needs no special case;
- ``<name>.__byte<i>``: uint8, byte i of every stored element (little-endian byte planes), deflated where that
  at least halves it: the sign/exponent plane of floats does, the mantissa planes do not, and storing those as
  they are saves their inflate time at load;
- every other tensor under its own name, as is (dense tensors, integer buffers, tensors too dense to gain).

Gaps rather than version 1's bitmask (still read, sparse_decode.decode_v1) because restoring from gaps costs one
cumulative sum over the kept elements instead of a scan of every element: at 90% sparsity 10x fewer; deflated,
the gaps cost what the bitmask did at 90-95% sparsity and ~3% more file at 50% and 2:4 (docs/benchmarks.md
section 9). N:M (2:4) masks use the same gaps.
Restoring gives the same bits: ``torch.equal`` on the bit patterns, not within a tolerance.
benchmarks/bench_sparse_storage.py measures the choices.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.engine.errors import InvalidModelError
from worker.engine.models.formats import SPARSE_INDEX as INDEX_KEY
from worker.engine.models.sparse_decode import BYTE, GAPS, MASK, MAX_GAP, VALUES, decode_v1, decode_v2

__all__ = [
    "ALIASES_KEY", "FORMAT", "INDEX_KEY", "LAYOUT", "LAYOUT_KEY", "MIN_PLANE_SAVING", "SparseParts", "deflate",
    "encode_state", "encode_tensor", "gap_bytes", "read_sparse", "stored_positions", "tied_aliases", "write_sparse",
]  # fmt: skip

FORMAT = "sparse_state_dict"
ALIASES_KEY = "prunekit.aliases"  # {name: name stored}: tied tensors, stored once
LAYOUT_KEY, LAYOUT = "prunekit.sparse_layout", "2"  # files without the key are version 1 (bitmask)
_LEVEL = 6  # zlib level: 9 is <1% smaller on resnet18 at 90% and 10x slower to write
# A byte plane deflating by less is stored as is: at 90% on resnet18 the exponent-LSB planes deflate by 15-50% and
# cost 2-4 ms of the load's inflate for 0.1 MiB (docs/benchmarks.md section 9 measures the trade-off).
MIN_PLANE_SAVING = 0.5
_MIN_ELEMENTS = 256  # smaller tensors (biases, norms) are not worth an entry in the index
_MIN_ZERO_SHARE = 0.1  # below this, compressing a tensor costs time for a few percent at most: stored as is
# A file that claims more dense bytes than this multiple of its own size is refused before anything is inflated.
_MAX_EXPANSION, _EXPANSION_FLOOR = 4096, 256 * 1024 * 1024
_INT_OF: dict[int, torch.dtype] = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_DTYPES = {"float16", "bfloat16", "float32", "float64"}


@dataclass(frozen=True)
class SparseParts:
    """One tensor's encoded entries ({suffix: bytes}) and which of its byte planes are deflated."""

    parts: dict[str, bytes]
    deflated: list[bool]

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.parts.values())


def _bits_set(tensor: torch.Tensor) -> torch.Tensor:
    """Which elements have a nonzero bit pattern (so -0.0 counts as a value and comes back as -0.0)."""
    return tensor.reshape(-1).view(_INT_OF[tensor.element_size()]) != 0


def stored_positions(nonzero: np.ndarray) -> np.ndarray:
    """Increasing positions to store: the nonzero ones, plus one every 255 inside each longer gap (a stored zero)."""
    distances = np.diff(nonzero, prepend=-1)
    fillers = (distances - 1) // MAX_GAP
    if not fillers.any():
        return nonzero
    owner = np.repeat(np.arange(len(nonzero)), fillers)  # the position each filler precedes
    step = np.arange(int(fillers.sum())) - np.repeat(np.cumsum(fillers) - fillers, fillers) + 1  # 1, 2, ... per gap
    filled = (nonzero - distances)[owner] + MAX_GAP * step
    return np.sort(np.concatenate([nonzero, filled]))


def gap_bytes(positions: np.ndarray) -> np.ndarray:
    """Distances between increasing positions (the first from -1), each at most 255 (see stored_positions)."""
    return np.diff(positions, prepend=-1).astype(np.uint8)


def deflate(data: bytes, level: int = _LEVEL) -> bytes:
    """The smaller of zlib's usual stream and a Huffman-only one (plain zlib.decompress reads both).

    Gaps have almost no repeats for LZ77 to find: Huffman-only codes them 9% smaller and inflates 20% faster
    (resnet18 at 90%); the sign/exponent planes do repeat, and keep the usual stream.
    """
    usual = zlib.compress(data, level)
    packer = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_HUFFMAN_ONLY)
    huffman = packer.compress(data) + packer.flush()
    return huffman if len(huffman) < len(usual) else usual


def _plane(data: bytes, level: int, min_saving: float) -> tuple[bytes, bool]:
    deflated = deflate(data, level)
    if len(deflated) <= (1 - min_saving) * len(data):
        return deflated, True
    return data, False


def encode_tensor(tensor: torch.Tensor, level: int = _LEVEL, min_plane_saving: float = MIN_PLANE_SAVING) -> SparseParts:
    """The deflated position gaps and the byte planes (deflated where worth it) of one floating tensor."""
    positions = stored_positions(np.flatnonzero(_bits_set(tensor).numpy()))
    parts = {GAPS: deflate(gap_bytes(positions).tobytes(), level)}
    values = tensor.reshape(-1)[torch.from_numpy(positions)]
    planes = values.view(torch.uint8).view(-1, tensor.element_size()).t().contiguous().numpy()
    deflated = []
    for i, plane in enumerate(planes):
        parts[f"{BYTE}{i}"], is_deflated = _plane(plane.tobytes(), level, min_plane_saving)
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
    state: Mapping[str, torch.Tensor], min_plane_saving: float = MIN_PLANE_SAVING
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
            encoded = encode_tensor(tensor, min_plane_saving=min_plane_saving)
            if encoded.nbytes < tensor.numel() * tensor.element_size():
                tensors.update({name + suffix: _blob(data) for suffix, data in encoded.parts.items()})
                index[name] = [list(tensor.shape), str(tensor.dtype).removeprefix("torch."), encoded.deflated]
                continue
        tensors[name] = tensor
    return tensors, index


def write_sparse(
    state: Mapping[str, torch.Tensor],
    path: Path,
    metadata: Mapping[str, str],
    min_plane_saving: float = MIN_PLANE_SAVING,
) -> None:
    """Write `state` to `path` in the sparse layout; `metadata` (architecture, ...) goes into the header."""
    from safetensors.torch import save_file

    aliases = tied_aliases(state)
    tensors, index = encode_state({k: v for k, v in state.items() if k not in aliases}, min_plane_saving)
    header = {
        **metadata, "format": FORMAT, LAYOUT_KEY: LAYOUT, INDEX_KEY: json.dumps(index),
        ALIASES_KEY: json.dumps(aliases),
    }  # fmt: skip
    save_file(tensors, str(path), metadata=header)


# --- reading (the README loader's steps, with every size checked: the file may be an upload) ----------------------

_Entry = tuple[list[int], str, list[bool] | None]  # shape, dtype, planes deflated (None: version 1)


def _entry(name: str, entry: object, layout: str) -> _Entry:
    size = 2 if layout == "1" else 3
    fields = entry if isinstance(entry, list) and len(entry) == size else [None] * size
    shape, dtype = fields[0], fields[1]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or dtype not in _DTYPES:
        raise InvalidModelError(f"the sparse file's index entry for '{name[:80]}' is not [shape, dtype, planes]")
    if layout == "1":
        return shape, dtype, None
    deflated = fields[2]
    if not isinstance(deflated, list) or len(deflated) != getattr(torch, dtype).itemsize:
        raise InvalidModelError(f"the sparse file's index entry for '{name[:80]}' does not list its byte planes")
    return shape, dtype, [bool(d) for d in deflated]


def _layout(metadata: Mapping[str, str]) -> str:
    layout = metadata.get(LAYOUT_KEY, "1")
    if layout not in ("1", LAYOUT):
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
    deflated = entry[2]
    return [MASK, VALUES] if deflated is None else [GAPS, *(f"{BYTE}{i}" for i in range(len(deflated)))]


def _resolve_aliases(metadata: Mapping[str, str], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    try:
        aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise InvalidModelError("the sparse file's aliases (metadata 'prunekit.aliases') are corrupt") from exc
    if not isinstance(aliases, dict) or not all(isinstance(v, str) and v in state for v in aliases.values()):
        raise InvalidModelError("the sparse file's aliases name tensors it does not hold")
    return {name: state[target] for name, target in aliases.items() if name not in state}


def _check_expansion(index: Mapping[str, _Entry], file_size: int) -> None:
    claimed = sum(math.prod(shape) * getattr(torch, dtype).itemsize for shape, dtype, _ in index.values())
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
    shape, dtype, deflated = entry
    part = {suffix: parts.get_tensor(name + suffix) for suffix in _suffixes(entry)}
    if any(p.dtype != np.uint8 or p.ndim != 1 for p in part.values()):
        raise InvalidModelError(f"the sparse file's parts of '{name[:80]}' are not flat uint8 tensors")
    return decode_v1(part, shape, dtype) if deflated is None else decode_v2(part, shape, dtype, deflated)


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
