"""Structured pruning by masking: zero whole output channels (dim 0 rows) with the smallest L1 or L2 norm.

Only the weight rows are masked; the layer's bias and any following normalization keep their values, so a pruned
channel still outputs a constant. Physically removing channels is ``structural`` pruning.
"""

from __future__ import annotations

import torch

from prunekit.spec.pruning import ChannelPruning
from worker.engine.pruning.base import MaskRequest, smallest_k_mask
from worker.engine.pruning.threshold import num_to_prune


def channel_norms(param: torch.Tensor, norm: str) -> torch.Tensor:
    """Norm of each output channel (row along dim 0); a 1-D parameter has one channel per entry."""
    rows = param.detach().reshape(param.shape[0], -1).float()
    return rows.abs().sum(dim=1) if norm == "l1" else rows.pow(2).sum(dim=1).sqrt()


@torch.no_grad()
def compute(req: MaskRequest) -> dict[str, torch.Tensor]:
    """Layerwise: each target loses round(sparsity * channels) channels, always keeping at least one."""
    cfg = req.cfg
    assert isinstance(cfg, ChannelPruning)
    masks = {}
    for t, sparsity in req.pairs():
        norms = channel_norms(t.param, cfg.norm)
        channels = norms.numel()
        # A layer with no output left would disconnect the network, so one channel always survives.
        k = min(num_to_prune(sparsity, channels), channels - 1)
        keep_rows = smallest_k_mask(norms, k)
        shape = (channels,) + (1,) * (t.param.dim() - 1)
        masks[t.name] = keep_rows.view(shape).expand(t.param.shape).contiguous()
    return masks
