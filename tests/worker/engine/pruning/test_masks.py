"""MaskSet: applying, keeping pruned weights at zero through training, gradients, accounting."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.spec.pruning import MagnitudePruning
from worker.engine.pruning import MaskSet, compute_masks, select_targets

from .conftest import EXAMPLE, small_cnn


def _masks(model: nn.Module, sparsity: float = 0.7) -> MaskSet:
    cfg = MagnitudePruning(sparsity=sparsity)
    return compute_masks(select_targets(model, cfg), cfg)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    model(EXAMPLE).square().mean().backward()
    opt.step()


def _pruned_values(model: nn.Module, masks: MaskSet) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach()[~m] for n, m in masks.masks.items()])


def test_apply_keeps_zeros_after_optimizer_steps() -> None:
    model = small_cnn()
    masks = _masks(model)
    masks.apply(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    control = copy.deepcopy(model)
    control_opt = torch.optim.SGD(control.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        _train_step(model, opt)
        masks.apply(model)
        _train_step(control, control_opt)
    assert torch.all(_pruned_values(model, masks) == 0)
    assert torch.count_nonzero(_pruned_values(control, masks)) > 0  # without apply the step regrows them


def test_grad_hooks_and_zero_grads() -> None:
    model = small_cnn()
    masks = _masks(model)
    handles = masks.register_grad_hooks(model)
    model(EXAMPLE).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(torch.all(grads[n][~m] == 0) for n, m in masks.masks.items())
    assert any(torch.count_nonzero(grads[n][m]) > 0 for n, m in masks.masks.items())
    for h in handles:
        h.remove()
    model.zero_grad()
    model(EXAMPLE).sum().backward()
    assert any(
        torch.count_nonzero(grads_n.grad[~masks.masks[n]]) > 0
        for n, grads_n in model.named_parameters()
        if n in masks.masks
    )
    masks.zero_grads(model)
    assert all(torch.all(p.grad[~masks.masks[n]] == 0) for n, p in model.named_parameters() if n in masks.masks)


def test_apply_on_scripted_and_rebinding_to_a_clone() -> None:
    from .conftest import scripted

    model = small_cnn()
    masks = _masks(model)
    script = scripted(copy.deepcopy(model))
    masks.apply(model)
    masks.apply(script)  # other module: parameters are looked up again, not reused from `model`
    assert torch.all(_pruned_values(script, masks) == 0)
    assert torch.allclose(script(EXAMPLE), model(EXAMPLE), atol=1e-6)


def test_accounting() -> None:
    masks = MaskSet({"a": torch.tensor([True, False, False, True]), "b": torch.zeros(2, 3, dtype=torch.bool)})
    assert masks.num_pruned() == 8 and masks.numel() == 10
    assert masks.sparsity() == pytest.approx(0.8)
    assert masks.per_param_sparsity() == {"a": 0.5, "b": 1.0}


def test_apply_clears_nan_in_pruned_slots() -> None:
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[float("nan"), 1.0]]))
    MaskSet({"weight": torch.tensor([[False, True]])}).apply(lin)
    assert lin.weight.tolist() == [[0.0, 1.0]]


def test_bad_masks_are_rejected() -> None:
    model = small_cnn()
    with pytest.raises(TypeError):
        MaskSet({"0.weight": torch.ones(8, 4, 3, 3)})
    with pytest.raises(KeyError):
        MaskSet({"nope.weight": torch.ones(2, dtype=torch.bool)}).apply(model)
    with pytest.raises(ValueError, match="shape"):
        MaskSet({"0.weight": torch.ones(2, dtype=torch.bool)}).apply(model)


def test_from_module_zeros_round_trip() -> None:
    model = small_cnn()
    masks = _masks(model, 0.5)
    masks.apply(model)
    again = MaskSet.from_module_zeros(model, masks.masks)
    assert all(torch.equal(again.masks[n], masks.masks[n]) for n in masks.masks)
