"""Parameters sharing storage (tied weights, e.g. GPT-2's ``lm_head`` and ``wte``): counted and pruned once."""

from __future__ import annotations

from collections.abc import Hashable

import torch


def storage_key(p: torch.Tensor) -> Hashable:
    """Same key for tensors that are the same memory (same start, shape and strides)."""
    if p.numel() == 0:
        return ("empty", id(p))
    return (str(p.device), p.dtype, p.data_ptr(), tuple(p.shape), tuple(p.stride()))


def _all_named(module: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    try:
        return list(module.named_parameters(remove_duplicate=False))
    except TypeError:  # modules overriding named_parameters without that argument
        return list(module.named_parameters())


def unique_parameters(
    module: torch.nn.Module,
) -> tuple[list[tuple[str, torch.nn.Parameter]], dict[str, list[str]]]:
    """Each tensor once under its first name (``named_parameters`` order), and first name -> the other names."""
    first_of: dict[Hashable, str] = {}
    unique: list[tuple[str, torch.nn.Parameter]] = []
    tied: dict[str, list[str]] = {}
    for name, p in _all_named(module):
        key = storage_key(p)
        first = first_of.get(key)
        if first is None:
            first_of[key] = name
            unique.append((name, p))
        elif name != first:
            tied.setdefault(first, []).append(name)
    return unique, tied
