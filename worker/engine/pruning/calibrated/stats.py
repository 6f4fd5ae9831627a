"""Running statistics of one layer's inputs over the calibration tokens."""

from __future__ import annotations

import torch


class InputStats:
    """Per group: the sum of squares of every input column (Wanda), and the Gram matrix X^T X (SparseGPT)."""

    def __init__(self, gram: bool) -> None:
        self.want_gram = gram
        self.squares: torch.Tensor | None = None  # [groups, width]
        self.gram: torch.Tensor | None = None  # [groups, width, width]
        self.tokens = 0

    def add(self, cols: torch.Tensor) -> None:
        """Add ``[groups, tokens, width]`` float32 columns."""
        sq = cols.square().sum(1)
        self.squares = sq if self.squares is None else self.squares + sq
        if self.want_gram:
            g = cols.transpose(1, 2) @ cols
            self.gram = g if self.gram is None else self.gram + g
        self.tokens += cols.shape[1]

    @property
    def seen(self) -> bool:
        return self.tokens > 0

    def norms(self) -> torch.Tensor:
        """The L2 norm of every input column over all tokens, ``[groups, width]``."""
        assert self.squares is not None
        return self.squares.sqrt()

    def hessian(self) -> torch.Tensor:
        """H = 2 X^T X / tokens, ``[groups, width, width]``: the layer-wise squared error's Hessian."""
        assert self.gram is not None
        return self.gram * (2.0 / self.tokens)
