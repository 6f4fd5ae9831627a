"""Decoding one tensor of a sparse_state_dict file, for each layout version, with every size checked.

The file may be an upload: nothing is inflated past the size its index implies, and every count is checked
against the tensor's shape before anything is written into it.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from worker.engine.errors import InvalidModelError

__all__ = [
    "BYTE", "CODES", "GAPS", "LOW", "MASK", "MAX_GAP", "SYMBOLS", "TABLES", "VALUES", "decode_v1", "decode_v2",
    "decode_v3", "positions_of",
]  # fmt: skip

CODES, LOW, TABLES = ".__codes", ".__low", ".__tables"  # version 3: one code per kept element; low bytes; tables
GAPS, BYTE = ".__gaps", ".__byte"  # version 2: kept positions as gaps; byte plane i of the kept values
MASK, VALUES = ".__mask", ".__values"  # version 1: bitmask; all byte planes in one blob
MAX_GAP = 255  # version 2: the longest distance a gap byte holds (a zero is stored every MAX_GAP positions)
SYMBOLS = 256  # version 3: a code is one byte; its tables give each of the 256 its gap and its top byte
_RAW, _ZLIB = -zlib.MAX_WBITS, zlib.MAX_WBITS  # version 3 parts are raw deflate streams, earlier ones zlib's


def _inflate(blob: np.ndarray, limit: int, what: str, wbits: int = _ZLIB) -> bytes:
    """Inflate at most `limit` bytes (a small blob can claim gigabytes); refuses more, or a truncated stream."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(blob.data, limit + 1)
    except zlib.error as exc:
        raise InvalidModelError(f"the sparse file's {what} is corrupt ({exc})") from exc
    if len(out) > limit or not inflater.eof:
        raise InvalidModelError(f"the sparse file's {what} does not have the size its index declares")
    return out


def _inflate_exactly(blob: np.ndarray, size: int, what: str, wbits: int = _ZLIB) -> bytes:
    out = _inflate(blob, size, what, wbits)
    if len(out) != size:
        raise InvalidModelError(f"the sparse file's {what} does not have the size its index declares")
    return out


def positions_of(gaps: np.ndarray) -> np.ndarray:
    """Stored element positions from gap bytes, each the distance (1 to 255) from the previous stored element."""
    # int64: the index type torch's scatter_ takes (numpy's int64 sum of bytes costs ~20% more than an int32 one)
    return np.cumsum(gaps, dtype=np.int64) - 1


def _checked_positions(gaps: np.ndarray, numel: int) -> np.ndarray:
    if not gaps.all():
        raise InvalidModelError("the sparse file's position gaps hold a 0 (two elements at one position)")
    positions = positions_of(gaps)
    if positions.size and int(positions[-1]) >= numel:
        raise InvalidModelError("the sparse file's position gaps run past the end of their tensor")
    return positions


def _scatter(positions: np.ndarray, values: np.ndarray, shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    """A dense tensor of zeros with `values` (bit patterns, one per position) at `positions`."""
    bits = getattr(torch, f"int{8 * dtype.itemsize}")
    dense = torch.zeros(math.prod(shape), dtype=bits)
    dense.scatter_(0, torch.from_numpy(positions), torch.from_numpy(values).view(bits))  # 2x numpy's fancy store
    return dense.view(dtype).reshape(shape)


def decode_v3(part: dict[str, np.ndarray], shape: list[int], dtype: str, deflated: list[bool]) -> torch.Tensor:
    """One dense tensor from its version-3 parts ({suffix: uint8 array}); raises InvalidModelError on any mismatch."""
    torch_dtype: torch.dtype = getattr(torch, dtype)
    numel, width = math.prod(shape), torch_dtype.itemsize
    tables = part[TABLES]
    if tables.size != 2 * SYMBOLS:
        raise InvalidModelError(f"the sparse file's code tables do not hold {2 * SYMBOLS} bytes")
    codes = _inflate(part[CODES], numel, "codes", _RAW) if deflated[0] else part[CODES].tobytes()
    if len(codes) > numel:
        raise InvalidModelError("the sparse file's codes are more than the elements of their tensor")
    positions = _checked_positions(np.frombuffer(codes.translate(tables[:SYMBOLS].tobytes()), np.uint8), numel)
    size = len(codes) * (width - 1) + 1  # the low bytes of each stored element, then one byte of padding
    low = _inflate_exactly(part[LOW], size, "low bytes", _RAW) if deflated[1] else part[LOW]
    if len(low) != size:
        raise InvalidModelError("the sparse file's low bytes do not have the size its codes declare")
    values = np.ndarray((len(codes),), f"<u{width}", low, 0, (width - 1,)).copy()  # + the next record's first byte
    tops = np.frombuffer(codes.translate(tables[SYMBOLS:].tobytes()), np.uint8)
    values.view(np.uint8).reshape(-1, width)[:, -1] = tops
    return _scatter(positions, values, shape, torch_dtype)


def decode_v2(part: dict[str, np.ndarray], shape: list[int], dtype: str, deflated: list[bool]) -> torch.Tensor:
    """One dense tensor from its version-2 parts ({suffix: uint8 array}); raises InvalidModelError on any mismatch."""
    torch_dtype: torch.dtype = getattr(torch, dtype)
    numel = math.prod(shape)
    gaps = np.frombuffer(_inflate(part[GAPS], numel, "position gaps"), dtype=np.uint8)
    positions = _checked_positions(gaps, numel)
    planes = []
    for i, is_deflated in enumerate(deflated):
        plane = part[f"{BYTE}{i}"]
        if is_deflated:
            plane = np.frombuffer(_inflate_exactly(plane, positions.size, f"byte plane {i}"), np.uint8)
        if plane.size != positions.size:
            raise InvalidModelError(f"the sparse file's byte plane {i} does not have the size its gaps declare")
        planes.append(plane)
    return _scatter(positions, _interleaved(planes), shape, torch_dtype)


def _interleaved(planes: list[np.ndarray]) -> np.ndarray:
    """Byte planes (byte i of every element) as one little-endian integer per element."""
    return np.stack(planes, axis=1).view(f"<u{len(planes)}").ravel()


def decode_v1(part: dict[str, np.ndarray], shape: list[int], dtype: str) -> torch.Tensor:
    """One dense tensor from its version-1 parts (deflated bitmask, deflated byte planes in one blob)."""
    torch_dtype: torch.dtype = getattr(torch, dtype)
    numel, itemsize = math.prod(shape), torch_dtype.itemsize
    packed = np.frombuffer(_inflate_exactly(part[MASK], (numel + 7) // 8, "bitmask"), dtype=np.uint8)
    bits = np.unpackbits(packed, bitorder="little")
    if bits[numel:].any():
        raise InvalidModelError("the sparse file's bitmask has bits set past the end of its tensor")
    kept = int(np.bitwise_count(packed).sum())
    values = np.frombuffer(_inflate_exactly(part[VALUES], kept * itemsize, "values"), dtype=np.uint8)
    positions = np.flatnonzero(bits[:numel].view(np.bool_)).astype(np.int64)
    return _scatter(positions, _interleaved(list(values.reshape(itemsize, -1))), shape, torch_dtype)
