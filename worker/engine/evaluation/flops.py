"""FLOPs counted on a real forward pass by torch's flop counter, dense and weighted by weight density."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

# Ops whose second operand is the layer's weight (for linear, addmm's is args[2], a view of the weight).
_WEIGHT_ARG = {
    torch.ops.aten.convolution: 1,
    torch.ops.aten._convolution: 1,
    torch.ops.aten.mm: 1,
    torch.ops.aten.addmm: 2,
    torch.ops.aten.bmm: 1,
}

FLOPS_METHOD = (
    "counted by torch.utils.flop_counter on one forward pass of one sample (2 FLOPs per multiply-add, "
    "convolutions and matrix products only); effective = each op's FLOPs x the nonzero fraction of its weight "
    "operand: what a sparse kernel could skip, not a measured speedup"
)


class _SparsityAwareCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.dense = 0
        self.effective = 0.0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            flops = int(flop_registry[packet](*args, **kwargs, out_val=out))
            density = 1.0
            idx = _WEIGHT_ARG.get(packet)
            if idx is not None and idx < len(args) and isinstance(args[idx], torch.Tensor):
                w = args[idx]
                density = float(torch.count_nonzero(w)) / max(w.numel(), 1)
            self.dense += flops
            self.effective += flops * density
        return out


@torch.no_grad()
def count_flops(module: torch.nn.Module, sample: torch.Tensor) -> tuple[int, int]:
    """(dense, effective) FLOPs for one sample of shape [1, ...]."""
    counter = _SparsityAwareCounter()
    with counter:
        module(sample)
    return counter.dense, round(counter.effective)
