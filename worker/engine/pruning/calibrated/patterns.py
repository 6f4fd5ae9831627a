"""Which entries of a score matrix are pruned: the same count in every row, or m - n in every group of m."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.engine.pruning.threshold import num_to_prune


def smallest_per_row(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Prune-mask (True = prune) of the k smallest scores along the last dimension of every row."""
    prune = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if k > 0:
        prune.scatter_(-1, torch.topk(scores, k, dim=-1, largest=False, sorted=False).indices, True)
    return prune


@dataclass(frozen=True)
class Pattern:
    """unstructured: ``round(sparsity * width)`` pruned per row; n:m: m - n pruned in every group of m columns."""

    sparsity: float
    nm: tuple[int, int] | None = None

    def row_count(self, width: int) -> int:
        """Entries pruned in one row of ``width`` columns."""
        if self.nm is not None:
            n, m = self.nm
            return (width // m) * (m - n)
        return num_to_prune(self.sparsity, width)

    def prune_mask(self, scores: torch.Tensor) -> torch.Tensor:
        """Prune-mask over ``scores`` (``[..., width]``): the lowest scores by the pattern."""
        if self.nm is None:
            return smallest_per_row(scores, self.row_count(scores.shape[-1]))
        n, m = self.nm
        groups = scores.reshape(*scores.shape[:-1], scores.shape[-1] // m, m)
        return smallest_per_row(groups, m - n).reshape(scores.shape)
