"""Entry point: masks for a spec's targets, at the final sparsity or at a level of a gradual schedule."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prunekit.spec.pruning import MaskPruningSpec
from worker.engine.pruning.base import MaskRequest
from worker.engine.pruning.masks import MaskSet
from worker.engine.pruning.registry import get_method
from worker.engine.pruning.targets import PruneTarget


def schedule_progress(cfg: MaskPruningSpec, level: float | None) -> float:
    """level / cfg.sparsity clamped to [0, 1]; 1.0 for final masks or when cfg.sparsity is 0 (nothing to scale)."""
    if level is None or cfg.sparsity <= 0.0:
        return 1.0
    return min(max(level / cfg.sparsity, 0.0), 1.0)


@torch.no_grad()
def compute_masks(
    targets: Sequence[PruneTarget],
    cfg: MaskPruningSpec,
    level: float | None = None,
    generator: torch.Generator | None = None,
) -> MaskSet:
    """Masks of ``cfg.method``; ``level`` (overall sparsity now) scales every target by level / cfg.sparsity."""
    progress = schedule_progress(cfg, level)
    req = MaskRequest(
        targets=targets,
        sparsities=[t.sparsity * progress for t in targets],
        global_sparsity=cfg.sparsity * progress,
        progress=progress,
        cfg=cfg,
        generator=generator,
    )
    return MaskSet(get_method(cfg.method)(req))
