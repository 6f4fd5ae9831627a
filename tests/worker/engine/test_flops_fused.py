"""FLOPs count the fused kernels torch's flop counter misses: the oneDNN LSTM layer and the attention fast paths."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp

from worker.engine.evaluation.flops import count_flops


class _Lstm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(32, 64, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


class _Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.attn(x, x, x)
        return self.head(y.mean(1))


def test_an_lstm_counts_every_gate_of_every_step() -> None:
    model, seq = _Lstm().eval(), 16
    dense, effective = count_flops(model, torch.randn(1, seq, 32))
    # Per step and layer: 4 gates x (input + hidden) x hidden multiply-adds (torch-pruning's LSTM hook reads the
    # sequence length from the wrong axis, so the analytic count is the reference here).
    per_step = 4 * 64 * (32 + 64) + 4 * 64 * (64 + 64)
    assert dense == 2 * seq * per_step and effective == dense


def test_sparse_lstm_weights_lower_the_effective_count() -> None:
    model = _Lstm().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("weight"):
                p[: p.shape[0] // 2] = 0  # half of every weight matrix
    dense, effective = count_flops(model, torch.randn(1, 8, 32))
    assert effective == pytest.approx(dense / 2, rel=1e-6)


@pytest.mark.parametrize(
    "model",
    [_Attention(), torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)],
    ids=["multihead_attention", "encoder_layer"],
)
def test_attention_fast_paths_match_torch_pruning(model: torch.nn.Module) -> None:
    model.eval()
    x = torch.randn(1, 16, 32)
    dense, _ = count_flops(model, x)
    macs, _ = tp.utils.count_ops_and_params(model, x)
    assert dense == pytest.approx(2 * macs, rel=0.10)
