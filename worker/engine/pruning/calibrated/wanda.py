"""Wanda (Sun, Liu, Bair & Kolter 2023): score each weight by |W_ij| * ||X_j||_2 and prune the lowest per output."""

from __future__ import annotations

import torch

from worker.engine.pruning.calibrated.patterns import Pattern


@torch.no_grad()
def wanda_prune(weight: torch.Tensor, norms: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Prune-mask of ``weight`` (``[groups, rows, width]``) from its inputs' column norms (``[groups, width]``)."""
    scores = weight.abs() * norms.unsqueeze(1)
    return pattern.prune_mask(scores)
