"""FLOPs counted on a real forward pass by torch's flop counter, dense and weighted by weight density."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from worker.engine.models.calling import as_inputs, caller

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
    "convolutions and matrix products), plus prunekit's formulas for the fused kernels it lacks (the oneDNN "
    "LSTM layer, the attention and transformer-encoder fast paths); effective = each op's FLOPs x the nonzero "
    "fraction of its weight operand: what a sparse kernel could skip, not a measured speedup"
)


def _density(w: torch.Tensor) -> float:
    return float(torch.count_nonzero(w)) / max(w.numel(), 1)


def _rnn_layer(args: Any) -> list[tuple[int, float]]:
    """aten.mkldnn_rnn_layer(input, w_ih, w_hh, b_ih, b_hh, hx, cx, reverse, batch_sizes, mode, hidden, layers, ...)."""
    x, w_ih, w_hh = args[0], args[1], args[2]
    steps = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]  # every (time, batch) position, either layout
    return [(2 * steps * w_ih.numel(), _density(w_ih)), (2 * steps * w_hh.numel(), _density(w_hh))]


def _attention(
    batch: int, q_len: int, kv_len: int, dim: int, qkv_w: torch.Tensor, proj_w: torch.Tensor
) -> list[tuple[int, float]]:
    """In-projections, scores, weighted values and the out-projection of one multi-head attention."""
    return [
        (2 * batch * dim * dim * (q_len + 2 * kv_len), _density(qkv_w)),
        (4 * batch * q_len * kv_len * dim, 1.0),  # Q K^T and softmax(.) V: no weight operand
        (2 * batch * q_len * dim * dim, _density(proj_w)),
    ]


def _native_mha(args: Any) -> list[tuple[int, float]]:
    """aten._native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight..."""
    q, k = args[0], args[1]
    batch = q.shape[0] if q.dim() == 3 else 1
    return _attention(batch, q.shape[-2], k.shape[-2], int(args[3]), args[5], args[7])


def _encoder_layer(args: Any) -> list[tuple[int, float]]:
    """aten._transformer_encoder_layer_fwd(src, embed_dim, heads, qkv_w, qkv_b, proj_w, proj_b, ..., ffn_w1, ffn_w2)."""
    src, ffn_w1, ffn_w2 = args[0], args[14], args[16]
    batch, length = (src.shape[0], src.shape[1]) if src.dim() == 3 else (1, src.shape[0])
    ffn = [(2 * batch * length * w.numel(), _density(w)) for w in (ffn_w1, ffn_w2)]
    return _attention(batch, length, length, int(args[1]), args[3], args[5]) + ffn


# Fused kernels torch's flop counter does not know: each maps its arguments to (FLOPs, weight density) parts.
_FUSED = {
    torch.ops.aten.mkldnn_rnn_layer: _rnn_layer,
    torch.ops.aten._native_multi_head_attention: _native_mha,
    torch.ops.aten._transformer_encoder_layer_fwd: _encoder_layer,
}


class _SparsityAwareCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.dense = 0
        self.effective = 0.0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in _FUSED:
            for flops, density in _FUSED[packet](args):
                self.dense += flops
                self.effective += flops * density
        elif packet in flop_registry:
            flops = int(flop_registry[packet](*args, **kwargs, out_val=out))
            density = 1.0
            idx = _WEIGHT_ARG.get(packet)
            if idx is not None and idx < len(args) and isinstance(args[idx], torch.Tensor):
                density = _density(args[idx])
            self.dense += flops
            self.effective += flops * density
        return out


@torch.no_grad()
def count_flops(module: torch.nn.Module, sample: torch.Tensor | Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(dense, effective) FLOPs for one sample of shape [1, ...] (one tensor, or named inputs)."""
    inputs = as_inputs(sample)
    call = caller(module, list(inputs))
    counter = _SparsityAwareCounter()
    with counter:
        call(inputs)
    return counter.dense, round(counter.effective)
