"""The fast global threshold must give exactly the masks of torch's global_unstructured (ties aside)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from worker.engine.pruning import threshold as thr
from worker.engine.pruning.threshold import (
    global_magnitude_masks,
    global_magnitude_threshold,
    sorted_threshold_reference,
)

from .conftest import small_cnn


def _torch_global_masks(model: nn.Module, amount: float) -> list[torch.Tensor]:
    model = copy.deepcopy(model)
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    tprune.global_unstructured([(m, "weight") for m in layers], pruning_method=tprune.L1Unstructured, amount=amount)
    return [m.weight_mask.bool() for m in layers]


def _our_masks(model: nn.Module, amount: float) -> list[torch.Tensor]:
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return global_magnitude_masks([m.weight for m in layers], amount)


@pytest.mark.parametrize("amount", [0.0, 0.1, 0.5, 0.9, 0.97, 1.0])
def test_small_model_masks_identical_to_torch(amount: float) -> None:
    model = small_cnn()
    ours, theirs = _our_masks(model, amount), _torch_global_masks(model, amount)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    n = sum(m.numel() for m in ours)
    assert sum(int((~m).sum()) for m in ours) == round(amount * n)


def test_many_weights_masks_identical_to_torch() -> None:
    # ~5.3M weights: above the sampling cut-off (sample bracket path) and one tensor above the 4M chunk (split).
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(64, 128, 3), nn.Linear(2100, 2048), nn.Linear(512, 1000))
    for amount in (0.5, 0.9):
        ours, theirs = _our_masks(model, amount), _torch_global_masks(model, amount)
        threshold = global_magnitude_threshold([m.weight for m in model], amount)
        for w, a, b in zip([m.weight for m in model], ours, theirs, strict=True):
            diff = a != b
            # Only ties at the threshold may differ (torch prunes an arbitrary subset of them, we prune them all).
            assert torch.all(w.detach().abs()[diff] == threshold)
        assert sum(int((a != b).sum()) for a, b in zip(ours, theirs, strict=True)) <= 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("amount", [0.001, 0.3, 0.75, 0.999])
def test_threshold_equals_sorted_reference(dtype: torch.dtype, amount: float) -> None:
    gen = torch.Generator().manual_seed(7)
    tensors = [(torch.randn(s, generator=gen) * scale).to(dtype) for s, scale in [(1000, 1), (37, 1e-3), (5000, 30)]]
    assert global_magnitude_threshold(tensors, amount) == sorted_threshold_reference(tensors, amount)


def test_mixed_dtypes_and_shapes() -> None:
    gen = torch.Generator().manual_seed(8)
    tensors = [torch.randn(40, 3, generator=gen).half(), torch.randn(7, 5, 2, generator=gen), torch.randn(11)]
    t = global_magnitude_threshold(tensors, 0.6)
    assert t == sorted_threshold_reference(tensors, 0.6)
    pruned = sum(int((~m).sum()) for m in global_magnitude_masks(tensors, 0.6))
    assert pruned == round(0.6 * sum(x.numel() for x in tensors))


def test_sampled_path_exact_for_several_amounts() -> None:
    gen = torch.Generator().manual_seed(9)
    tensors = [torch.randn(600_000, generator=gen), torch.rand(900_000, generator=gen) * 0.01]
    for amount in (0.05, 0.5, 0.95, 0.9999):
        assert global_magnitude_threshold(tensors, amount) == sorted_threshold_reference(tensors, amount)


@pytest.mark.parametrize("bracket", ["below", "above", "empty_low"])
def test_missed_sample_bracket_still_exact(monkeypatch: pytest.MonkeyPatch, bracket: str) -> None:
    gen = torch.Generator().manual_seed(10)
    tensors = [torch.randn(3000, generator=gen), torch.randn(500, generator=gen)]
    ref = sorted_threshold_reference(tensors, 0.4)
    ref_bits = int(torch.tensor(ref, dtype=torch.float32).view(torch.int32))
    ranges = {"below": (0, ref_bits - 5), "above": (ref_bits + 1, ref_bits + 100), "empty_low": (0, 1)}
    monkeypatch.setattr(thr, "_sample_bracket", lambda flats, n, k: ranges[bracket])
    assert global_magnitude_threshold(tensors, 0.4) == ref


def test_ties_at_threshold_are_all_pruned() -> None:
    w = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, -0.5, 0.5, 2.0, 3.0, -4.0])
    assert global_magnitude_threshold([w], 0.2) == 0.0
    (mask,) = global_magnitude_masks([w], 0.2)
    assert mask.tolist() == [False] * 4 + [True] * 6  # 4 tied zeros pruned although k = 2
    (mask,) = global_magnitude_masks([w], 0.5)
    assert int((~mask).sum()) == 7  # k = 5 lands on 0.5, so all three |0.5| go


def test_nothing_to_prune() -> None:
    w = torch.tensor([1.0, float("nan"), 0.0])
    assert global_magnitude_threshold([w], 0.1) == -math.inf
    assert global_magnitude_masks([w], 0.1)[0].all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nan_weights_are_kept_like_torch(dtype: torch.dtype) -> None:
    lin = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        lin.weight[1, 2] = float("nan")
        lin.weight.copy_(lin.weight.to(dtype).float())
    ours = global_magnitude_masks([lin.weight.detach().to(dtype)], 0.5)[0]
    tprune.global_unstructured([(lin, "weight")], pruning_method=tprune.L1Unstructured, amount=0.5)
    assert bool(ours[1, 2]) and torch.equal(ours, lin.weight_mask.bool())


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        global_magnitude_threshold([torch.randn(10)], 1.5)
    with pytest.raises(TypeError):
        global_magnitude_threshold([torch.arange(10)], 0.5)
