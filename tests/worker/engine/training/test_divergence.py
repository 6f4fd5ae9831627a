"""The divergence guard: NaN/Inf and exploding losses stop fine-tuning; rises to chance level do not."""

from __future__ import annotations

import math

import pytest

from worker.engine.errors import InvalidSpecError
from worker.engine.training.divergence import DivergenceGuard


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_is_divergence(bad: float) -> None:
    guard = DivergenceGuard()
    guard.check(0.1, num_classes=10, step=1)
    with pytest.raises(InvalidSpecError, match=r"diverged.*step 2.*lower finetune\.optimizer\.lr"):
        guard.check(bad, num_classes=10, step=2)


def test_exploding_finite_loss_is_divergence() -> None:
    # The shape seen with SGD at lr=10 on the digits CNN: 0.066 → 125 → 99415 → ... → settles near chance.
    guard = DivergenceGuard()
    guard.check(0.066, num_classes=10, step=1)
    guard.check(125.5, num_classes=10, step=2)
    with pytest.raises(InvalidSpecError, match=r"rose from 0.066 to 9\.942e\+04 at step 3"):
        guard.check(99415.8, num_classes=10, step=3)


def test_rising_to_chance_level_is_not_divergence() -> None:
    # A near-perfect model pruned hard: its loss may climb from ~0 to ln(C) and above while it recovers.
    guard = DivergenceGuard()
    guard.check(1e-4, num_classes=10, step=1)
    for step, loss in enumerate([0.5, 2.3, 9.0, 40.0, 3.0], start=2):
        guard.check(loss, num_classes=10, step=step)


def test_the_first_loss_sets_the_scale_when_above_chance() -> None:
    # Heavy regularizer terms make the total loss large from the start; only relative growth counts.
    guard = DivergenceGuard(factor=10)
    guard.check(500.0, num_classes=10, step=1)
    guard.check(4999.0, num_classes=10, step=2)
    with pytest.raises(InvalidSpecError):
        guard.check(5001.0, num_classes=10, step=3)
