"""Mask-based pruning: choose target parameters, compute keep-masks with a method, apply them to a module."""

from worker.engine.pruning.compute import compute_masks, schedule_progress
from worker.engine.pruning.masks import MaskSet
from worker.engine.pruning.registry import METHODS, get_method
from worker.engine.pruning.schedule import cubic_sparsity, is_update_step
from worker.engine.pruning.targets import PruneTarget, TargetPlan, classify, plan_targets, select_targets
from worker.engine.pruning.threshold import global_magnitude_masks, global_magnitude_threshold

__all__ = [
    "METHODS",
    "MaskSet",
    "PruneTarget",
    "TargetPlan",
    "classify",
    "compute_masks",
    "cubic_sparsity",
    "get_method",
    "global_magnitude_masks",
    "global_magnitude_threshold",
    "is_update_step",
    "plan_targets",
    "schedule_progress",
    "select_targets",
]
