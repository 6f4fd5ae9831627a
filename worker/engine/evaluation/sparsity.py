"""Sparsity and parameter counts, measured on the weights themselves."""

from __future__ import annotations

from collections.abc import Collection

import torch

from prunekit.spec.report import LayerSparsity, SparsityStats


def sparsity_stats(module: torch.nn.Module, targets: Collection[str], target: float | None) -> SparsityStats:
    """Per-parameter zeros; `global_sparsity` covers the pruning targets only."""
    layers: list[LayerSparsity] = []
    t_params = t_zeros = all_params = all_zeros = 0
    for name, p in module.named_parameters():
        n = p.numel()
        zeros = n - int(torch.count_nonzero(p.detach()))
        pruned = name in targets
        layers.append(
            LayerSparsity(name=name, shape=list(p.shape), params=n, zeros=zeros, sparsity=zeros / n, pruned=pruned)
        )
        all_params += n
        all_zeros += zeros
        if pruned:
            t_params += n
            t_zeros += zeros
    return SparsityStats(
        global_sparsity=t_zeros / t_params if t_params else 0.0,
        overall_sparsity=all_zeros / all_params if all_params else 0.0,
        target_sparsity=target,
        layers=layers,
    )


def count_params(module: torch.nn.Module) -> tuple[int, int]:
    """(total, nonzero) over all parameters."""
    total = nonzero = 0
    for p in module.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return total, nonzero
