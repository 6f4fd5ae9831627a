"""The int8 weight-only Linear: a TorchScript-able module, so the artifact loads with plain torch.jit.load.

No `from __future__ import annotations` here: TorchScript reads the attribute annotations as real types.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Int8WeightOnlyLinear(nn.Module):
    """A Linear whose weight is stored int8 with one float32 scale per output row; computed in the input's dtype."""

    weight_int8: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float().cpu()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # symmetric, per output channel
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        bias = linear.bias.detach().float().cpu() if linear.bias is not None else torch.zeros(w.shape[0])
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_int8.to(x.dtype) * self.scale.to(x.dtype)[:, None]
        return F.linear(x, weight, self.bias.to(x.dtype))
