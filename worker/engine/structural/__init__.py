"""Structural pruning: physically remove channels (torch-pruning dependency graph), issue 4."""

from worker.engine.structural.importance import IMPORTANCES, ChannelImportance, GradientFn, make_importance
from worker.engine.structural.prune import (
    LatencyFn,
    StructuralResult,
    Widths,
    default_speedup_fn,
    prune_structurally,
    rebuild_from_widths,
)

__all__ = [
    "IMPORTANCES",
    "ChannelImportance",
    "GradientFn",
    "LatencyFn",
    "StructuralResult",
    "Widths",
    "default_speedup_fn",
    "make_importance",
    "prune_structurally",
    "rebuild_from_widths",
]
