"""Hidden-state distillation: each kept block's output against the same block of the original (Minitron).

Structural pruning keeps a subset of the original's blocks and hidden dimensions, so every block of the smaller
model has a known counterpart: block i is the original's block kept_layers[i], and its output holds the original's
hidden dimensions `hidden` in order. The loss compares them directly; no learned projection is needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from worker.engine.models.calling import caller

_EPS = 1e-8


def _block_output(output: Any) -> torch.Tensor:
    # A Hugging Face block returns its hidden states alone or first in a tuple (with attentions, caches).
    return output[0] if isinstance(output, tuple) else output


class HiddenMatch:
    """Records block outputs of the smaller model and the original, and the MSE between matched pairs."""

    def __init__(
        self,
        student_blocks: Sequence[nn.Module],
        teacher_blocks: Sequence[nn.Module],
        kept_layers: Sequence[int],
        hidden: Sequence[int] | None,
        weight: float,
    ) -> None:
        if len(student_blocks) != len(kept_layers):
            raise ValueError("one kept layer index per block of the smaller model")
        self.weight = weight
        self._student = list(student_blocks)
        self._teacher = [teacher_blocks[i] for i in kept_layers]
        self._hidden = torch.tensor(list(hidden)) if hidden is not None else None
        self._student_out: dict[int, torch.Tensor] = {}
        self._teacher_out: dict[int, torch.Tensor] = {}

    @contextmanager
    def recording(self) -> Iterator[HiddenMatch]:
        """Hooks on both models' blocks for the duration (fine-tuning); each forward overwrites the last."""
        handles = [self._hook(b, i, self._student_out) for i, b in enumerate(self._student)]
        handles += [self._hook(b, i, self._teacher_out) for i, b in enumerate(self._teacher)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self._student_out.clear()
            self._teacher_out.clear()

    @staticmethod
    def _hook(block: nn.Module, index: int, into: dict[int, torch.Tensor]) -> RemovableHandle:
        def keep(_m: nn.Module, _a: Any, output: Any) -> None:
            into[index] = _block_output(output)

        return block.register_forward_hook(keep)

    def loss(self, teacher: nn.Module, x: Mapping[str, torch.Tensor], teacher_ran: bool) -> torch.Tensor:
        """weight x mean over blocks of MSE(student, original on the kept dims) / the original's mean square."""
        if not teacher_ran:
            with torch.no_grad():
                caller(teacher, list(x))(x)
        terms = self.pair_losses()
        self._teacher_out.clear()
        return self.weight * torch.stack(terms).mean()

    def pair_losses(self) -> list[torch.Tensor]:
        """Per kept block, the normalized MSE of the last recorded forward of both models (unweighted)."""
        return [self._pair_loss(i) for i in range(len(self._student))]

    def _pair_loss(self, i: int) -> torch.Tensor:
        student, target = self._student_out[i].float(), self._teacher_out[i].detach().float()
        if self._hidden is not None:
            target = target.index_select(-1, self._hidden.to(target.device))
        # Normalized so the weight means the same for any model's activation scale.
        return F.mse_loss(student, target) / (target.pow(2).mean() + _EPS)
