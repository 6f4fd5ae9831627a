"""Budgets: the smallest scaling of the requested ratios that meets target_params or target_speedup.

The ratios given are ceilings; all are multiplied by one factor in (0, 1], snapped to legal widths, and the
factor is bisected. Parameter counts come from the rewritten config built on the meta device (no memory);
speedups are measured on pruned copies timed interleaved with the original.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from prunekit.spec.pruning import TransformerStructuralPruning
from prunekit.spec.report import TransformerWidths
from worker.engine.models.huggingface import HF_TASKS
from worker.engine.transformer_structural.families import write_widths
from worker.engine.transformer_structural.legality import plan_widths

__all__ = ["BudgetChoice", "choose_widths", "params_of"]

PARAM_STEPS = 10
SPEEDUP_STEPS = 5

# (widths) -> (meets the budget, the measured speedup if one was measured)
Fits = Callable[[TransformerWidths], tuple[bool, float | None]]


@dataclass
class BudgetChoice:
    widths: TransformerWidths
    scale: float
    reached: bool | None = None  # None: no budget
    measured_speedup: float | None = None


def params_of(config: Any, task: str, widths: TransformerWidths) -> int:
    """Parameters of the model the rewritten config builds (tied weights once), built on the meta device."""
    import transformers

    cfg = copy.deepcopy(config)
    write_widths(cfg, widths, list(range(widths.num_hidden_layers)))
    with torch.device("meta"):
        model = getattr(transformers, HF_TASKS[task][0]).from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def choose_widths(config: Any, cfg: TransformerStructuralPruning, task: str, fits: Fits | None) -> BudgetChoice:
    """The ratios as given without a budget; else the smallest factor whose widths fit (the ceilings if none)."""
    full = plan_widths(config, cfg, task)  # refuses illegal ratios before any search
    if fits is None:
        return BudgetChoice(full, 1.0)
    seen: dict[tuple[int, ...], tuple[bool, float | None]] = {}  # widths -> result: snapping repeats widths

    def check(scale: float) -> tuple[TransformerWidths, bool, float | None]:
        widths = full if scale == 1.0 else plan_widths(config, cfg, task, scale=scale, snap=True)
        key = tuple(widths.model_dump().values())
        if key not in seen:
            seen[key] = fits(widths)
        return widths, *seen[key]

    widths, ok, speedup = check(1.0)
    if not ok:
        return BudgetChoice(widths, 1.0, False, speedup)
    lo, hi, best = 0.0, 1.0, (widths, speedup)
    for _ in range(SPEEDUP_STEPS if cfg.target_speedup is not None else PARAM_STEPS):
        mid = (lo + hi) / 2
        candidate, ok, speedup = check(mid)
        if ok:
            hi, best = mid, (candidate, speedup)
        else:
            lo = mid
    return BudgetChoice(best[0], round(hi, 4), True, best[1])
