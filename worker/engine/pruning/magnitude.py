"""Unstructured magnitude pruning: one global threshold over all targets, or each layer at its own sparsity."""

from __future__ import annotations

import torch

from prunekit.spec.pruning import MagnitudePruning
from worker.engine.pruning.base import MaskRequest, magnitude_layer_mask
from worker.engine.pruning.threshold import global_magnitude_threshold, magnitude_keep_mask


@torch.no_grad()
def compute(req: MaskRequest) -> dict[str, torch.Tensor]:
    """Global scope: non-overridden targets share one threshold at the global sparsity; overrides are layerwise."""
    cfg = req.cfg
    assert isinstance(cfg, MagnitudePruning)
    masks: dict[str, torch.Tensor] = {}
    pool = [t for t in req.targets if not t.overridden] if cfg.scope == "global" else []
    if pool:
        threshold = global_magnitude_threshold([t.param for t in pool], req.global_sparsity)
        for t in pool:
            masks[t.name] = magnitude_keep_mask(t.param, threshold)
    for t, sparsity in req.pairs():
        if t.name not in masks:
            masks[t.name] = magnitude_layer_mask(t.param, sparsity)
    return {t.name: masks[t.name] for t in req.targets}  # in target order
