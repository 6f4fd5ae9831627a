"""Small models for the zoo-safety tests: an embedding + attention classifier, a GPT-2-style LM with tied weights,
an LSTM classifier. Random init; each with a matching example input."""

from __future__ import annotations

import torch
from torch import nn


class AttentionClassifier(nn.Module):
    """Token embedding (N(0, 1) init) + a loose positional parameter + one attention/FF block + a linear head."""

    def __init__(self, vocab: int = 1000, dim: int = 32, classes: int = 4, length: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, length, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 2 * dim)
        self.ff2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = self.norm(h + self.ff2(torch.relu(self.ff1(h))))
        return self.head(h.mean(dim=1))


class TinyGPT(nn.Module):
    """GPT-2 in miniature: token + position embeddings, 2 pre-norm blocks, ``lm_head`` tied to ``wte``."""

    def __init__(self, vocab: int = 64, dim: int = 32, length: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(length, dim)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        h = self.wte(tokens) + self.wpe(torch.arange(t, device=tokens.device))
        mask = torch.triu(torch.full((t, t), float("-inf"), device=tokens.device), diagonal=1)
        for block in self.blocks:
            h = block(h, src_mask=mask)
        return self.lm_head(self.ln_f(h))


class LSTMClassifier(nn.Module):
    """A 2-layer LSTM over [batch, time, features] and a linear head on the last step."""

    def __init__(self, features: int = 6, hidden: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


def tokens(vocab: int, length: int, rows: int = 4, seed: int = 0) -> torch.Tensor:
    """Random token ids [rows, length]."""
    return torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))
