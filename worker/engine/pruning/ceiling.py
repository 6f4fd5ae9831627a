"""A per-layer ceiling for global rankings: no tensor of the pool loses more than ``floor(ceiling * numel)``
entries, and what the capped tensors cannot take is taken from the others, so the pool's total still holds.

Without it one global ranking can empty a whole layer (squeezenet's conv classifier at 50%, embeddings with
N(0, 1) weights next to small linear layers): its output is then constant and the model broken.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from worker.engine.pruning.base import smallest_k_mask
from worker.engine.pruning.threshold import magnitude_keep_masks, threshold_for_count


def layer_caps(sizes: Sequence[int], ceiling: float) -> list[int]:
    """Most entries each tensor may lose: floor(ceiling * numel) (all of them at ceiling 1.0)."""
    return [n if ceiling >= 1.0 else math.floor(ceiling * n) for n in sizes]


@torch.no_grad()
def capped_magnitude_masks(params: Sequence[torch.Tensor], k: int, ceiling: float) -> list[torch.Tensor]:
    """Keep-masks removing the k smallest magnitudes of all tensors, none beyond its cap (fewer when infeasible).

    A tensor over its cap keeps exactly its cap pruned (its own smallest weights) and leaves the pool; the rest
    is re-ranked with what is left of k, until no tensor is over.
    """
    caps = layer_caps([p.numel() for p in params], ceiling)
    masks: dict[int, torch.Tensor] = {}
    free = list(range(len(params)))
    remaining = min(k, sum(caps))
    while free:
        pool = [params[i] for i in free]
        room = sum(p.numel() for p in pool)
        thr = threshold_for_count(pool, min(remaining, room))
        pool_masks = magnitude_keep_masks(pool, thr)
        over = [i for i, m in zip(free, pool_masks, strict=True) if m.numel() - int(m.count_nonzero()) > caps[i]]
        if not over:
            masks.update(zip(free, pool_masks, strict=True))
            break
        for i in over:
            masks[i] = smallest_k_mask(params[i].detach().abs().float(), caps[i])
            remaining -= caps[i]
        free = [i for i in free if i not in over]
    return [masks[i] for i in range(len(params))]


def capped_counts(counts: Sequence[int], sizes: Sequence[int], ceiling: float, gen: torch.Generator) -> list[int]:
    """Per-tensor counts of a random global subset, with what exceeds a cap drawn uniformly from the room left."""
    caps = layer_caps(sizes, ceiling)
    excess = sum(max(0, c - cap) for c, cap in zip(counts, caps, strict=True))
    clipped = [min(c, cap) for c, cap in zip(counts, caps, strict=True)]
    if excess == 0:
        return clipped
    room = [cap - c for c, cap in zip(clipped, caps, strict=True)]
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    extra = np.random.Generator(np.random.PCG64(seed)).multivariate_hypergeometric(room, min(excess, sum(room)))
    return [c + int(e) for c, e in zip(clipped, extra, strict=True)]
