"""Exact global magnitude threshold without sorting (or copying) every weight.

``torch.nn.utils.prune.global_unstructured`` concatenates all weights and runs ``topk`` over them: a full copy plus
a partial sort (seconds on resnet50). Here the k-th smallest magnitude is found by radix select on the bit patterns:
for non-negative IEEE floats, the bits read as an integer are ordered like the values, so ``bits & 0x7FFFFFFF`` of a
float32 is a sort key for ``|w|``. Each pass histograms the keys that fall in the current candidate range (with one
"below" and one "above" bin) with ``torch.bincount``, and narrows the range to the one bin holding the k-th key.

A random sample (fixed seed, so runs are reproducible) brackets the answer first, so for typical weights a single
full pass over the data is exact; a bracket that misses only costs extra passes, never correctness. Extra memory is
one int32 chunk buffer of at most 4M elements (16 MB) and a histogram of at most 2^20 bins, never a copy
of all weights (float64 inputs excepted, see ``global_magnitude_threshold``).

Ties: masks keep ``|w| > threshold``, so every weight equal to the threshold is pruned. Without ties that is exactly
``k = round(amount * n)`` weights, the same set ``global_unstructured`` (``topk`` smallest) prunes; with ties at the
threshold all tied weights are pruned (a few more than k) where torch prunes an arbitrary subset of them. NaN keys
sort above +inf, as in ``topk``, so NaN weights are the last to be pruned (and are kept by the masks).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence

import torch

_ABS_BITS = 0x7FFFFFFF  # clears the sign bit of a float32 seen as int32
_KEY_END = 1 << 31  # keys are in [0, 2^31)
_CHUNK = 1 << 22  # elements per bincount call; fewer, larger calls also mean fewer parallel-region barriers
_SAMPLE = 1 << 17
_MAX_BIN_BITS = 20
_SAMPLE_SIGMAS = 5.0
_MAX_PASSES = 16


def num_to_prune(amount: float, numel: int) -> int:
    """Number of entries pruned for a fraction ``amount``; the same rounding as ``torch.nn.utils.prune``."""
    if math.isnan(amount) or not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be in [0, 1], got {amount}")
    return round(amount * numel)


def _flatten(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    flats = []
    for t in tensors:
        if not t.is_floating_point():
            raise TypeError(f"magnitude pruning needs floating-point tensors, got {t.dtype}")
        flats.append(t.detach().reshape(-1))
    return flats


def _bits_to_float(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


class _KeyPass:
    """Writes keys into one reusable int32 chunk buffer per device and histograms them a chunk at a time."""

    def __init__(self, flats: Sequence[torch.Tensor]) -> None:
        self.flats = flats
        # Bounded by _CHUNK whatever the model: big tensors are split, so memory never scales with the weights.
        self.size = min(_CHUNK, sum(f.numel() for f in flats))
        self.buffers: dict[torch.device, torch.Tensor] = {}

    def _pieces(self) -> Iterator[torch.Tensor]:
        for f in self.flats:
            for start in range(0, f.numel(), self.size):
                yield f[start : start + self.size]

    def histogram(self, lo_key: int, hi_key: int, shift: int) -> torch.Tensor:
        """Counts of ``bits >> shift``: bin 0 below lo_key, bins 1..n for [lo_key, hi_key), bin n+1 at or above."""
        nbins = hi_key - lo_key + 2
        top = min(hi_key, _KEY_END - 1)  # keep the clamp bound in int32; only keys of 2^31 - 1 (NaN) reach it
        hist = torch.zeros(nbins, dtype=torch.int64)
        buf: torch.Tensor | None = None
        used = 0

        def flush(keys: torch.Tensor) -> None:
            if shift:
                keys.bitwise_right_shift_(shift)
            # Clamp before moving the origin so the subtraction cannot overflow int32.
            keys.clamp_(lo_key - 1, top).sub_(lo_key - 1)
            hist.add_(torch.bincount(keys, minlength=nbins).cpu())

        for piece in self._pieces():
            if buf is not None and (buf.device != piece.device or used + piece.numel() > buf.numel()):
                flush(buf[:used])
                used = 0
            buf = self.buffers.get(piece.device)
            if buf is None:
                buf = self.buffers[piece.device] = torch.empty(self.size, dtype=torch.int32, device=piece.device)
            out = buf[used : used + piece.numel()]
            if piece.dtype == torch.float32:
                torch.bitwise_and(piece.view(torch.int32), _ABS_BITS, out=out)
            else:  # float16/bfloat16 widen to float32 exactly, so all keys share one scale
                out.view(torch.float32).copy_(piece)
                out.bitwise_and_(_ABS_BITS)
            used += piece.numel()
        if buf is not None and used:
            flush(buf[:used])
        return hist


def _sample_bracket(flats: Sequence[torch.Tensor], n: int, k: int) -> tuple[int, int]:
    """Key range [lo, hi) that holds the k-th smallest key with overwhelming probability, from a random sample."""
    if n <= 4 * _SAMPLE:
        return 0, _KEY_END
    gen = torch.Generator().manual_seed(0x5EED)
    parts = []
    for f in flats:
        m = round(_SAMPLE * f.numel() / n)
        if m:
            idx = torch.randint(f.numel(), (m,), generator=gen).to(f.device)
            parts.append(f[idx].float().cpu())
    sample = torch.cat(parts).view(torch.int32).bitwise_and_(_ABS_BITS)
    s = sample.numel()
    p = k / n
    delta = _SAMPLE_SIGMAS * math.sqrt(p * (1 - p) / s) + 2.0 / s
    r_lo = math.floor((p - delta) * s)  # 1-based ranks in the sample
    r_hi = math.ceil((p + delta) * s)
    lo = int(sample.kthvalue(r_lo).values) if r_lo >= 1 else 0
    hi = int(sample.kthvalue(r_hi).values) + 1 if r_hi <= s else _KEY_END
    return lo, hi


@torch.no_grad()
def global_magnitude_threshold(tensors: Sequence[torch.Tensor], amount: float) -> float:
    """Magnitude t such that keeping ``|w| > t`` prunes the ``round(amount * n)`` smallest weights of all tensors.

    Returns ``-inf`` when nothing is to be pruned; ties at t are all pruned. float64 inputs fall back to ``kthvalue``
    on one float64 copy (their keys would need 63 bits).
    """
    n = sum(t.numel() for t in tensors)
    return threshold_for_count(tensors, num_to_prune(amount, n))


@torch.no_grad()
def threshold_for_count(tensors: Sequence[torch.Tensor], k: int) -> float:
    """Magnitude t such that keeping ``|w| > t`` prunes the k smallest weights of all tensors (-inf for k <= 0)."""
    flats = [f for f in _flatten(tensors) if f.numel() > 0]
    n = sum(f.numel() for f in flats)
    if k <= 0:
        return -math.inf
    if k > n:
        raise ValueError(f"cannot prune {k} of {n} weights")
    if any(f.dtype == torch.float64 for f in flats):
        return float(torch.cat([f.to(torch.float64) for f in flats]).abs_().kthvalue(k).values)

    passes = _KeyPass(flats)
    max_bits = min(_MAX_BIN_BITS, max(12, n.bit_length() - 3))  # small inputs: small histograms, a few more passes
    lo, hi = _sample_bracket(flats, n, k)
    for _ in range(_MAX_PASSES):
        shift = max(0, (hi - lo - 1).bit_length() - max_bits)
        lo_key, hi_key = lo >> shift, (hi + (1 << shift) - 1) >> shift
        cum = passes.histogram(lo_key, hi_key, shift).cumsum(0)
        j = int(torch.searchsorted(cum, k))  # bin holding the k-th smallest key
        if j == 0:  # below the bracket (the sample missed): search everything under it
            lo, hi = 0, lo_key << shift
        elif j == hi_key - lo_key + 1:  # above the bracket
            lo, hi = hi_key << shift, _KEY_END
        else:
            lo = (lo_key + j - 1) << shift
            hi = lo + (1 << shift)
            if shift == 0:
                return _bits_to_float(lo)
    # Each pass narrows the range or leaves a missed bracket once; more passes mean the weights changed meanwhile.
    raise RuntimeError("global magnitude threshold did not converge (were the weights modified concurrently?)")


@torch.no_grad()
def magnitude_keep_masks(tensors: Sequence[torch.Tensor], threshold: float) -> list[torch.Tensor]:
    """Bool masks ``|w| > threshold`` (True = keep), with NaN ordered above +inf as in ``topk``."""
    if threshold == -math.inf:  # nothing pruned
        return [torch.ones_like(t, dtype=torch.bool) for t in tensors]
    f32 = torch.tensor(threshold, dtype=torch.float32)
    exact_f32 = float(f32) == threshold
    thr_bits = int(f32.view(torch.int32)) & _ABS_BITS
    scratch: dict[torch.device, torch.Tensor] = {}
    masks = []
    for t in tensors:
        t = t.detach()
        if t.dtype == torch.float32 and exact_f32 and t.is_contiguous():
            # Integer compare of the magnitude bits: no float abs copy, and NaN (bits above inf) is kept like topk.
            mask = torch.empty(t.shape, dtype=torch.bool, device=t.device)
            flat, out = t.view(-1).view(torch.int32), mask.view(-1)
            size = min(_CHUNK, flat.numel())
            buf = scratch.get(t.device)
            if buf is None or buf.numel() < size:
                buf = scratch[t.device] = torch.empty(size, dtype=torch.int32, device=t.device)
            for start in range(0, flat.numel(), size):
                piece = flat[start : start + size]
                keys = torch.bitwise_and(piece, _ABS_BITS, out=buf[: piece.numel()])
                torch.gt(keys, thr_bits, out=out[start : start + piece.numel()])
            masks.append(mask)
        else:
            if t.dtype != torch.float64 and float(torch.tensor(threshold, dtype=t.dtype)) != threshold:
                t = t.double()  # threshold not representable in t's dtype: compare in float64, don't round it
            masks.append(~(t.abs() <= threshold))  # NaN compares False, so it is kept
    return masks


def magnitude_keep_mask(tensor: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool mask ``|tensor| > threshold`` of one tensor (see ``magnitude_keep_masks``)."""
    return magnitude_keep_masks([tensor], threshold)[0]


@torch.no_grad()
def global_magnitude_masks(tensors: Sequence[torch.Tensor], amount: float) -> list[torch.Tensor]:
    """Keep-masks (True = keep) of one global magnitude threshold over all tensors."""
    return magnitude_keep_masks(tensors, global_magnitude_threshold(tensors, amount))


@torch.no_grad()
def sorted_threshold_reference(tensors: Sequence[torch.Tensor], amount: float) -> float:
    """The same threshold by ``kthvalue`` on one float64 copy of everything: slow, for float64 and for tests."""
    flats = _flatten(tensors)
    n = sum(f.numel() for f in flats)
    k = num_to_prune(amount, n)
    if k == 0:
        return -math.inf
    return float(torch.cat([f.to(torch.float64) for f in flats]).abs_().kthvalue(k).values)
