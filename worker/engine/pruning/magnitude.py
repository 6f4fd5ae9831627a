"""Unstructured magnitude pruning: one global threshold over all targets, or each layer at its own sparsity."""

from __future__ import annotations

import torch

from prunekit.spec.pruning import MagnitudePruning
from worker.engine.pruning.base import MaskRequest, magnitude_layer_mask
from worker.engine.pruning.ceiling import capped_magnitude_masks
from worker.engine.pruning.threshold import num_to_prune


@torch.no_grad()
def compute(req: MaskRequest) -> dict[str, torch.Tensor]:
    """Global scope: non-overridden targets share one threshold at the global sparsity, none beyond the layer
    ceiling (``max_layer_sparsity``); overrides are layerwise."""
    cfg = req.cfg
    assert isinstance(cfg, MagnitudePruning)
    masks: dict[str, torch.Tensor] = {}
    pool = req.global_pool() if cfg.scope == "global" else []
    if pool:
        params = [t.param for t in pool]
        k = num_to_prune(req.global_sparsity, sum(p.numel() for p in params))
        pool_masks = capped_magnitude_masks(params, k, cfg.layer_ceiling())
        masks.update(zip([t.name for t in pool], pool_masks, strict=True))
    for t, sparsity in req.pairs():
        if t.name not in masks:
            masks[t.name] = magnitude_layer_mask(t.param, sparsity)
    return {t.name: masks[t.name] for t in req.targets}  # in target order
