"""Random unstructured pruning (a baseline): exactly round(s * n) entries, uniformly, from a seeded generator."""

from __future__ import annotations

import numpy as np
import torch

from prunekit.spec.pruning import RandomPruning
from worker.engine.pruning.base import MaskRequest
from worker.engine.pruning.ceiling import capped_counts
from worker.engine.pruning.threshold import num_to_prune

DEFAULT_SEED = 0


def _random_layer_mask(param: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    keep = torch.ones(param.numel(), dtype=torch.bool)
    if k:
        keep[torch.randperm(param.numel(), generator=gen)[:k]] = False
    return keep.view(param.shape).to(param.device)


def _split_global(sizes: list[int], k: int, gen: torch.Generator) -> list[int]:
    """How many of a uniform random k-subset of all entries fall in each tensor (multivariate hypergeometric)."""
    # Drawing per-tensor counts first avoids materialising random scores for every weight (one full copy).
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return [int(c) for c in np.random.Generator(np.random.PCG64(seed)).multivariate_hypergeometric(sizes, k)]


@torch.no_grad()
def compute(req: MaskRequest) -> dict[str, torch.Tensor]:
    """Global scope: one random subset over the non-overridden targets, none beyond the layer ceiling; layerwise:
    each at its own sparsity."""
    cfg = req.cfg
    assert isinstance(cfg, RandomPruning)
    gen = req.generator if req.generator is not None else torch.Generator().manual_seed(DEFAULT_SEED)
    counts = {t.name: num_to_prune(s, t.param.numel()) for t, s in req.pairs()}
    pool = req.global_pool() if cfg.scope == "global" else []
    if pool:
        sizes = [t.param.numel() for t in pool]
        k = num_to_prune(req.global_sparsity, sum(sizes))
        split = capped_counts(_split_global(sizes, k, gen), sizes, cfg.layer_ceiling(), gen)
        counts.update(zip([t.name for t in pool], split, strict=True))
    return {t.name: _random_layer_mask(t.param, counts[t.name], gen) for t in req.targets}
