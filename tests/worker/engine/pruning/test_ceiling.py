"""The per-layer ceiling of global rankings: exact totals, no tensor over its cap, one threshold for the rest."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch

from prunekit.spec.pruning import MagnitudePruning, RandomPruning
from worker.engine.pruning.ceiling import capped_counts, capped_magnitude_masks, layer_caps
from worker.engine.pruning.threshold import threshold_for_count


def _tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    big = torch.randn(4000, generator=g)  # N(0, 1): would take the whole pool's pruning
    small = [torch.rand(n, generator=g) * 0.01 for n in (300, 500)]  # tiny magnitudes: emptied without a ceiling
    return [big, *small]


def _pruned(mask: torch.Tensor) -> int:
    return int((~mask).sum())


@pytest.mark.parametrize("ceiling", [0.5, 0.9, 0.95])
def test_caps_hold_and_the_total_is_exact(ceiling: float) -> None:
    tensors = _tensors()
    k = round(0.4 * sum(t.numel() for t in tensors))
    masks = capped_magnitude_masks(tensors, k, ceiling)
    caps = layer_caps([t.numel() for t in tensors], ceiling)
    assert sum(_pruned(m) for m in masks) == k
    assert all(_pruned(m) <= cap for m, cap in zip(masks, caps, strict=True))
    assert [_pruned(m) for m in masks[1:]] == caps[1:]  # the small tensors are held at their caps


def test_uncapped_tensors_share_one_threshold() -> None:
    tensors = _tensors()
    masks = capped_magnitude_masks(tensors, 2000, 0.9)
    big, mask = tensors[0], masks[0]
    assert float(big[~mask].abs().max()) <= float(big[mask].abs().min())


def test_ceiling_one_is_the_plain_global_threshold() -> None:
    tensors = _tensors()
    masks = capped_magnitude_masks(tensors, 1500, 1.0)
    thr = threshold_for_count(tensors, 1500)
    assert all(torch.equal(m, t.abs() > thr) for m, t in zip(masks, tensors, strict=True))
    assert _pruned(masks[1]) == 300  # a whole tensor removed: only when asked for


def test_infeasible_total_stops_at_the_caps() -> None:
    tensors = _tensors()
    masks = capped_magnitude_masks(tensors, 4700, 0.5)
    assert [_pruned(m) for m in masks] == layer_caps([t.numel() for t in tensors], 0.5)


def test_random_counts_are_capped_and_redistributed() -> None:
    gen = torch.Generator().manual_seed(0)
    counts = capped_counts([10, 90, 0], [100, 100, 100], 0.5, gen)
    assert sum(counts) == 100 and max(counts) <= 50 and counts[1] == 50


def test_spec_ceiling_defaults_and_validation() -> None:
    assert MagnitudePruning(sparsity=0.5).layer_ceiling() == 0.95
    assert MagnitudePruning(sparsity=0.98).layer_ceiling() == pytest.approx(0.99)
    assert MagnitudePruning(max_layer_sparsity=1.0).layer_ceiling() == 1.0
    with pytest.raises(pydantic.ValidationError, match="max_layer_sparsity"):
        MagnitudePruning(sparsity=0.9, max_layer_sparsity=0.8)
    with pytest.raises(pydantic.ValidationError, match="max_layer_sparsity"):
        RandomPruning(scope="global", sparsity=0.9, max_layer_sparsity=0.8)
    assert RandomPruning(scope="layerwise", sparsity=0.9, max_layer_sparsity=0.8).layer_ceiling() == 0.8
    with pytest.raises(pydantic.ValidationError):
        MagnitudePruning(max_layer_sparsity=0.0)
    assert math.isclose(MagnitudePruning(sparsity=0.9).layer_ceiling(), 0.95)
