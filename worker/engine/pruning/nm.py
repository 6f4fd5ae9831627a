"""Semi-structured N:M pruning: in each group of M consecutive inputs of an output, keep the N largest.

Groups run along the flattened input dimension of each output: ``weight.reshape(out, -1)`` (for a conv
``[out, in, kh, kw]`` that is in*kh*kw, in memory order), so that size must be divisible by M.
"""

from __future__ import annotations

import torch

from prunekit.spec.pruning import NMPruning
from worker.engine.errors import UnsupportedError
from worker.engine.pruning.base import MaskRequest, smallest_k_mask
from worker.engine.pruning.targets import PruneTarget


def _rows(t: PruneTarget) -> torch.Tensor:
    """One row per output, its inputs along the row (Conv1D weights are stored [in, out]: transposed first)."""
    p = t.param.detach()
    if t.inputs_first and p.dim() == 2:
        return p.t()
    return p.reshape(p.shape[0], -1) if p.dim() >= 2 else p.reshape(1, -1)


def reduction_size(t: PruneTarget) -> int:
    """The input size each output's groups run along (in*kh*kw for a conv)."""
    return int(_rows(t).shape[1])


def nm_mask(t: PruneTarget, n: int, m: int) -> torch.Tensor:
    """Keep-mask with exactly n kept in every group of m consecutive inputs (ties broken by ``topk``)."""
    rows = _rows(t)
    width = rows.shape[1]
    if width % m:
        raise UnsupportedError(
            f"N:M pruning of {t.name!r} (shape {tuple(t.param.shape)}): its input size {width} is not divisible by "
            f"M={m}. Leave it out, e.g. exclude: [{t.name!r}] (a compress job skips such layers unless strict is set)"
        )
    groups = rows.abs().reshape(rows.shape[0], width // m, m)
    keep = torch.zeros(groups.shape, dtype=torch.bool, device=groups.device)
    keep.scatter_(-1, torch.topk(groups, n, dim=-1, sorted=False).indices, True)
    rows_keep = keep.view(rows.shape)
    return rows_keep.t().contiguous() if t.inputs_first and t.param.dim() == 2 else rows_keep.view(t.param.shape)


@torch.no_grad()
def compute(req: MaskRequest) -> dict[str, torch.Tensor]:
    """Final masks are exact N:M; during a gradual schedule only the smallest ``progress`` share of the entries
    N:M will remove are removed yet, so the pattern is reached at the end."""
    cfg = req.cfg
    assert isinstance(cfg, NMPruning)
    masks = {}
    for t in req.targets:
        if t.sparsity == 0.0:  # override: keep this layer dense
            masks[t.name] = torch.ones_like(t.param, dtype=torch.bool)
            continue
        keep = nm_mask(t, cfg.n, cfg.m)
        if req.progress < 1.0:
            removable = ~keep
            k = round(req.progress * int(removable.sum()))
            scores = t.param.detach().abs().float().masked_fill(keep, float("inf"))
            keep = smallest_k_mask(scores, k)
        masks[t.name] = keep
    return masks
