"""Gradual pruning schedule (Zhu & Gupta 2017, "To prune, or not to prune")."""

from __future__ import annotations


def cubic_sparsity(step: int, start_step: int, end_step: int, initial: float, final: float) -> float:
    """s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (end - t0))^3, held at s_i before t0 and at s_f from end on."""
    if step <= start_step:
        return initial
    if step >= end_step:
        return final
    remaining = 1.0 - (step - start_step) / (end_step - start_step)
    return final + (initial - final) * remaining**3


def is_update_step(step: int, start_step: int, end_step: int, frequency: int) -> bool:
    """Whether masks are recomputed at this step: every ``frequency`` steps in [start, end], and at end."""
    if step < start_step or step > end_step:
        return False
    return (step - start_step) % frequency == 0 or step == end_step
