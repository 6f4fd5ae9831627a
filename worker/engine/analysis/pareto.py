"""Pareto fronts over trials: no other trial is at least as good on every objective and better on one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prunekit.spec.report import Trial

Objective = Callable[[Trial], float | None]  # larger is better; None = unmeasured (never on the front)


def mark_pareto(trials: Sequence[Trial], objectives: Sequence[Objective]) -> None:
    """Set `trial.pareto` in place for the non-dominated trials."""
    values = [[obj(t) for obj in objectives] for t in trials]
    for i, trial in enumerate(trials):
        mine = values[i]
        if any(v is None for v in mine):
            trial.pareto = False
            continue
        trial.pareto = not any(_dominates(values[j], mine) for j in range(len(trials)) if j != i)


def _dominates(a: list[float | None], b: list[float | None]) -> bool:
    if any(v is None for v in a):
        return False
    pairs = list(zip(a, b, strict=True))
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)  # type: ignore[operator]


def accuracy_vs_sparsity() -> list[Objective]:
    """The front users ask about first: highest validation accuracy at each sparsity."""
    return [lambda t: t.val_accuracy, lambda t: t.sparsity]
