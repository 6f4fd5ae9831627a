"""What every mask method receives, and helpers they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prunekit.spec.pruning import MaskPruningSpec
from worker.engine.pruning.targets import PruneTarget
from worker.engine.pruning.threshold import global_magnitude_threshold, magnitude_keep_mask, num_to_prune


@dataclass(frozen=True)
class MaskRequest:
    """One mask computation: targets with their sparsity at the current schedule level."""

    targets: Sequence[PruneTarget]
    sparsities: Sequence[float]  # per target, already scaled to the current level
    global_sparsity: float  # cfg.sparsity scaled to the current level: the pool of non-overridden targets
    progress: float  # level / final sparsity in [0, 1]; 1.0 for final masks
    cfg: MaskPruningSpec
    generator: torch.Generator | None

    def pairs(self) -> list[tuple[PruneTarget, float]]:
        return list(zip(self.targets, self.sparsities, strict=True))

    def global_pool(self) -> list[PruneTarget]:
        """Targets ranked together by a global scope: those at the spec's own sparsity. Overrides, and targets a
        caller gave another sparsity (e.g. a per-layer sensitivity scan), are pruned layerwise instead."""
        return [t for t in self.targets if not t.overridden and t.sparsity == self.cfg.sparsity]


def magnitude_layer_mask(param: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask removing the ``round(sparsity * numel)`` smallest magnitudes of one tensor (ties at the cut too)."""
    if num_to_prune(sparsity, param.numel()) == 0:
        return torch.ones_like(param, dtype=torch.bool)
    return magnitude_keep_mask(param, global_magnitude_threshold([param], sparsity))


def smallest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask over ``scores`` (any shape) that removes exactly the k smallest (ties broken by ``topk``)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        keep[torch.topk(scores.reshape(-1), k, largest=False, sorted=False).indices] = False
    return keep.view(scores.shape)
