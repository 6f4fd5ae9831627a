"""Pruning one layer from its input statistics: Wanda masks, or SparseGPT masks with updated weights."""

from __future__ import annotations

import torch

from prunekit.spec.pruning import CalibratedPruningSpec, SparseGPTPruning
from worker.engine.pruning.calibrated.layers import LayerView
from worker.engine.pruning.calibrated.patterns import Pattern
from worker.engine.pruning.calibrated.sparsegpt import sparsegpt_prune
from worker.engine.pruning.calibrated.stats import InputStats
from worker.engine.pruning.calibrated.wanda import wanda_prune


def pattern_of(cfg: CalibratedPruningSpec, sparsity: float) -> Pattern:
    """The pattern a target at ``sparsity`` (its own, after overrides) is pruned to."""
    return Pattern(sparsity, (cfg.n, cfg.m) if cfg.pattern == "n:m" else None)


class LayerPruner:
    """Prunes layers in place by the configured method; returns their keep-masks (True = keep)."""

    def __init__(self, cfg: CalibratedPruningSpec) -> None:
        self.cfg = cfg
        self.needs_gram = isinstance(cfg, SparseGPTPruning)

    def new_stats(self) -> InputStats:
        return InputStats(gram=self.needs_gram)

    @torch.no_grad()
    def prune(self, view: LayerView, stats: InputStats, sparsity: float) -> torch.Tensor:
        """Prune ``view``'s weight to ``sparsity`` from its inputs' statistics; write the result into the layer."""
        pattern = pattern_of(self.cfg, sparsity)
        weight = view.matrix()
        cfg = self.cfg
        if isinstance(cfg, SparseGPTPruning):
            hessians = stats.hessian()
            pruned = [
                sparsegpt_prune(weight[g], hessians[g], pattern, cfg.blocksize, cfg.percdamp)
                for g in range(view.groups)
            ]
            weight = torch.stack([w for w, _ in pruned])
            prune = torch.stack([p for _, p in pruned])
        else:
            prune = wanda_prune(weight, stats.norms(), pattern)
        keep = view.to_param(~prune)
        updated = view.to_param(weight.masked_fill(prune, 0.0))
        view.weight.copy_(updated.to(view.weight.dtype))
        return keep


@torch.no_grad()
def magnitude_keep(weight: torch.Tensor, pattern: Pattern, view: LayerView | None) -> torch.Tensor:
    """Keep-mask by |weight| with the same pattern, for targets no calibration statistics reach."""
    if view is not None:
        return view.to_param(~pattern.prune_mask(view.matrix().abs()))
    w = weight.detach().float()
    mat = w.reshape(w.shape[0], -1) if w.dim() >= 2 else w.reshape(1, -1)
    return (~pattern.prune_mask(mat.abs())).reshape(weight.shape)
