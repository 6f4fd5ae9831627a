"""Boolean keep-masks over named parameters, and applying them to a module."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch.utils.hooks import RemovableHandle


@dataclass
class _Bound:
    """Masks resolved against one module: its parameters and the matching 'pruned' masks on their devices."""

    module: weakref.ReferenceType[torch.nn.Module]
    pairs: list[tuple[torch.nn.Parameter, torch.Tensor]]


@dataclass
class MaskSet:
    """Keep-masks by parameter name (bool, same shape as the parameter; True = keep)."""

    masks: dict[str, torch.Tensor]
    _bound: _Bound | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, m in self.masks.items():
            if m.dtype != torch.bool:
                raise TypeError(f"mask of {name!r} must be bool, got {m.dtype}")

    def _pairs(self, module: torch.nn.Module) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
        # Look parameters up once per module (named_parameters walks the whole tree); a new module rebinds.
        bound = self._bound
        if bound is None or bound.module() is not module:
            params = dict(module.named_parameters())
            missing = [n for n in self.masks if n not in params]
            if missing:
                raise KeyError(f"module has no parameters named {missing[:5]}")
            pairs = []
            for name, mask in self.masks.items():
                p = params[name]
                if p.shape != mask.shape:
                    raise ValueError(f"mask of {name!r} has shape {tuple(mask.shape)}, parameter {tuple(p.shape)}")
                pairs.append((p, ~mask.to(p.device)))
            bound = self._bound = _Bound(weakref.ref(module), pairs)
        for i, (p, pruned) in enumerate(bound.pairs):
            if pruned.device != p.device:  # module moved since binding
                bound.pairs[i] = (p, pruned.to(p.device))
        return bound.pairs

    @torch.no_grad()
    def apply(self, module: torch.nn.Module) -> None:
        """Zero pruned weights in place; call after every optimizer step to keep them at zero."""
        for p, pruned in self._pairs(module):
            p.masked_fill_(pruned, 0)  # masked_fill, not multiply: also clears NaN/inf in pruned slots

    @torch.no_grad()
    def zero_grads(self, module: torch.nn.Module) -> None:
        """Zero the gradients of pruned weights (before ``optimizer.step()``), so momentum does not build up there."""
        for p, pruned in self._pairs(module):
            if p.grad is not None:
                p.grad.masked_fill_(pruned, 0)

    def register_grad_hooks(self, module: torch.nn.Module) -> list[RemovableHandle]:
        """Hooks that zero pruned entries of each gradient as backward computes it; remove them when done."""
        handles = []
        for p, pruned in self._pairs(module):
            handles.append(p.register_hook(lambda g, pruned=pruned: g.masked_fill(pruned.to(g.device), 0)))
        return handles

    def num_pruned(self) -> int:
        """Entries set to be removed, over all masks."""
        return sum(int(m.numel() - m.count_nonzero()) for m in self.masks.values())

    def numel(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    def sparsity(self) -> float:
        """Fraction of masked entries that are pruned, over all masked parameters together."""
        total = self.numel()
        return self.num_pruned() / total if total else 0.0

    def per_param_sparsity(self) -> dict[str, float]:
        """Fraction pruned of each masked parameter."""
        return {n: 1.0 - int(m.count_nonzero()) / m.numel() if m.numel() else 0.0 for n, m in self.masks.items()}

    def to(self, device: torch.device | str) -> MaskSet:
        """The same masks on another device."""
        return MaskSet({n: m.to(device) for n, m in self.masks.items()})

    @classmethod
    def from_module_zeros(cls, module: torch.nn.Module, names: Iterable[str]) -> MaskSet:
        """Masks that keep exactly the nonzero entries of the named parameters (e.g. of an already pruned model)."""
        params = dict(module.named_parameters())
        return cls({n: params[n].detach() != 0 for n in names})
