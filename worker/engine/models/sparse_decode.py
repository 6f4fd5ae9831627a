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

__all__ = ["BYTE", "GAPS", "MASK", "MAX_GAP", "VALUES", "decode_v1", "decode_v2", "positions_of"]

GAPS, BYTE = ".__gaps", ".__byte"  # version 2: kept positions as gaps; byte plane i of the kept values
MASK, VALUES = ".__mask", ".__values"  # version 1: bitmask; all byte planes in one blob
MAX_GAP = 255  # the longest distance a gap byte holds; longer runs of zeros store a zero every MAX_GAP positions


def _inflate(blob: np.ndarray, limit: int, what: str) -> bytes:
    """zlib-inflate at most `limit` bytes (a small blob can claim gigabytes); refuses more, or a truncated stream."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(blob.data, limit + 1)
    except zlib.error as exc:
        raise InvalidModelError(f"the sparse file's {what} is corrupt ({exc})") from exc
    if len(out) > limit or not inflater.eof:
        raise InvalidModelError(f"the sparse file's {what} does not have the size its index declares")
    return out


def _inflate_exactly(blob: np.ndarray, size: int, what: str) -> bytes:
    out = _inflate(blob, size, what)
    if len(out) != size:
        raise InvalidModelError(f"the sparse file's {what} does not have the size its index declares")
    return out


def positions_of(gaps: np.ndarray) -> np.ndarray:
    """Stored element positions from gap bytes, each the distance (1 to 255) from the previous stored element."""
    # int32 where it cannot overflow: numpy's int32 cumulative sum of bytes runs ~10x faster than its int64 one
    return np.cumsum(gaps, dtype=np.int32 if gaps.size * MAX_GAP < 2**31 else np.int64) - 1


def _scatter(positions: np.ndarray, planes: list[np.ndarray], shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    # numpy, on the bit patterns as integers: calloc'd zeros and one fancy-index store (torch's is 2-4x slower)
    ints = np.dtype(f"<i{dtype.itemsize}")
    dense = np.zeros(math.prod(shape), dtype=ints)
    dense[positions] = np.stack(planes, axis=1).view(ints).ravel()
    return torch.from_numpy(dense).view(dtype).reshape(shape)


def decode_v2(part: dict[str, np.ndarray], shape: list[int], dtype: str, deflated: list[bool]) -> torch.Tensor:
    """One dense tensor from its version-2 parts ({suffix: uint8 array}); raises InvalidModelError on any mismatch."""
    torch_dtype: torch.dtype = getattr(torch, dtype)
    numel = math.prod(shape)
    gaps = np.frombuffer(_inflate(part[GAPS], numel, "position gaps"), dtype=np.uint8)
    if not gaps.all():
        raise InvalidModelError("the sparse file's position gaps hold a 0 (two elements at one position)")
    positions = positions_of(gaps)
    if positions.size and int(positions[-1]) >= numel:
        raise InvalidModelError("the sparse file's position gaps run past the end of their tensor")
    planes = []
    for i, is_deflated in enumerate(deflated):
        plane = part[f"{BYTE}{i}"]
        if is_deflated:
            plane = np.frombuffer(_inflate_exactly(plane, positions.size, f"byte plane {i}"), np.uint8)
        if plane.size != positions.size:
            raise InvalidModelError(f"the sparse file's byte plane {i} does not have the size its gaps declare")
        planes.append(plane)
    return _scatter(positions, planes, shape, torch_dtype)


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
    planes = list(values.reshape(itemsize, -1))
    return _scatter(np.flatnonzero(bits[:numel].view(np.bool_)), planes, shape, torch_dtype)
