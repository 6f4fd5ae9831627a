"""Divergence: a loss that is not finite, or that explodes far above where fine-tuning started."""

from __future__ import annotations

import math

from worker.engine.errors import InvalidSpecError

ADVICE = "lower finetune.optimizer.lr or the regularizer coefficients"
# Far above any rise that pruning or a regularizer causes on its own; an exploding loss passes it within steps.
EXPLOSION_FACTOR = 100.0


class DivergenceGuard:
    """Stops fine-tuning whose loss is NaN/Inf or explodes: the model it leaves is not worth delivering.

    A loss that explodes need not reach Inf: it can spike to 1e9 and settle on a collapsed model at chance.
    """

    def __init__(self, factor: float = EXPLOSION_FACTOR) -> None:
        self.factor = factor
        self.first: float | None = None
        self._reference = 0.0

    def check(self, loss: float, num_classes: int, step: int) -> None:
        """Raise InvalidSpecError when `loss` (of 1-based `step`) shows divergence."""
        if not math.isfinite(loss):
            raise InvalidSpecError(f"fine-tuning diverged: the loss became {loss} at step {step}; {ADVICE}")
        if self.first is None:
            # Chance level (ln C) floors the reference: a near-perfect model's tiny start loss may rise to chance
            # under heavy pruning without anything diverging.
            self.first = loss
            self._reference = max(loss, math.log(max(num_classes, 2)))
            return
        if loss > self.factor * self._reference:
            raise InvalidSpecError(
                f"fine-tuning diverged: the loss rose from {self.first:.4g} to {loss:.4g} at step {step} "
                f"(over {self.factor:g}x its start or chance level); {ADVICE}"
            )
