"""Sparsity and parameter counts, measured on the weights themselves; tied (shared) tensors count once."""

from __future__ import annotations

import math
from collections.abc import Collection

import torch

from prunekit.spec.report import LayerSparsity, SparsityStats
from worker.engine.pruning.ties import unique_parameters

HIGH_SPARSITY = 0.95  # pruned layers at or above this are flagged in the report


def sparsity_stats(module: torch.nn.Module, targets: Collection[str], target: float | None) -> SparsityStats:
    """Per-tensor zeros; `global_sparsity` covers the pruning targets only (a target may be named by any alias)."""
    params, tied = unique_parameters(module)
    layers: list[LayerSparsity] = []
    t_params = t_zeros = all_params = all_zeros = 0
    for name, p in params:
        n = p.numel()
        zeros = n - int(torch.count_nonzero(p.detach()))
        pruned = name in targets or any(alias in targets for alias in tied.get(name, []))
        layers.append(
            LayerSparsity(
                name=name, shape=list(p.shape), params=n, zeros=zeros, sparsity=zeros / n if n else 0.0, pruned=pruned
            )
        )
        all_params += n
        all_zeros += zeros
        if pruned:
            t_params += n
            t_zeros += zeros
    flagged = [row for row in layers if row.pruned and row.params and is_high(row.zeros, row.params)]
    return SparsityStats(
        global_sparsity=t_zeros / t_params if t_params else 0.0,
        overall_sparsity=all_zeros / all_params if all_params else 0.0,
        target_sparsity=target,
        layers=layers,
        high_sparsity_threshold=HIGH_SPARSITY,
        high_sparsity_layers=[row.name for row in flagged],
        empty_layers=[row.name for row in flagged if row.zeros == row.params],
        tied=tied,
    )


def is_high(zeros: int, numel: int) -> bool:
    """At or above HIGH_SPARSITY, counted as the per-layer ceiling counts: floor(0.95 * numel) zeros or more."""
    return numel > 0 and zeros >= math.floor(HIGH_SPARSITY * numel)


def count_params(module: torch.nn.Module) -> tuple[int, int]:
    """(total, nonzero) over all parameters, each tensor once however many names share it."""
    total = nonzero = 0
    for _, p in unique_parameters(module)[0]:
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return total, nonzero
