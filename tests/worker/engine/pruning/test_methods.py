"""Each registered mask method: sparsity, structure, determinism, and schedule-level scaling."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from prunekit.spec.pruning import ChannelPruning, MagnitudePruning, NMPruning, RandomPruning
from worker.engine.errors import UnsupportedError
from worker.engine.pruning import METHODS, compute_masks, select_targets

from .conftest import EXAMPLE, small_cnn


def _pruned(mask: torch.Tensor) -> int:
    return int((~mask).sum())


def _wide_model() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(16, 64, 3), nn.Conv2d(64, 32, 1), nn.Flatten(), nn.Linear(300, 200), nn.Linear(200, 7)
    )


def test_registry_covers_every_mask_method_of_the_spec() -> None:
    from typing import get_args

    from prunekit.spec.pruning import MaskPruningSpec

    assert set(METHODS) == {cls.model_fields["method"].default for cls in get_args(MaskPruningSpec)}


def test_global_magnitude_total_exact_and_matches_torch() -> None:
    model = _wide_model()
    cfg = MagnitudePruning(sparsity=0.8)
    targets = select_targets(model, cfg)
    masks = compute_masks(targets, cfg)
    total = sum(t.param.numel() for t in targets)
    assert masks.num_pruned() == round(0.8 * total)
    ref = copy.deepcopy(model)
    layers = [ref[0], ref[1], ref[3]]
    tprune.global_unstructured([(m, "weight") for m in layers], pruning_method=tprune.L1Unstructured, amount=0.8)
    for t, m in zip(targets, layers, strict=True):
        assert torch.equal(masks.masks[t.name], m.weight_mask.bool())
    per_layer = masks.per_param_sparsity()
    assert len(set(round(v, 2) for v in per_layer.values())) > 1  # global: layers end up at different sparsities


def test_layerwise_magnitude_exact_per_layer_and_matches_torch() -> None:
    model = _wide_model()
    cfg = MagnitudePruning(scope="layerwise", sparsity=0.6, overrides={"3": 0.25})
    targets = select_targets(model, cfg)
    masks = compute_masks(targets, cfg)
    for t in targets:
        assert _pruned(masks.masks[t.name]) == round(t.sparsity * t.param.numel())
        ref = tprune.l1_unstructured(copy.deepcopy(dict(model.named_modules())[t.module_name]), "weight", t.sparsity)
        assert torch.equal(masks.masks[t.name], ref.weight_mask.bool())


def test_global_magnitude_keeps_overrides_layerwise() -> None:
    model = _wide_model()
    cfg = MagnitudePruning(sparsity=0.7, overrides={"0": 0.1})
    targets = select_targets(model, cfg)
    masks = compute_masks(targets, cfg)
    first = targets[0]
    assert _pruned(masks.masks[first.name]) == round(0.1 * first.param.numel())
    pool = [t for t in targets if not t.overridden]
    assert sum(_pruned(masks.masks[t.name]) for t in pool) == round(0.7 * sum(t.param.numel() for t in pool))


@pytest.mark.parametrize("cfg", [MagnitudePruning(sparsity=0.5), RandomPruning(scope="global", sparsity=0.5)])
def test_global_scope_respects_a_target_given_its_own_sparsity(cfg: MagnitudePruning | RandomPruning) -> None:
    # What a per-layer sensitivity scan does: one target, its sparsity replaced by the level under test.
    target = dataclasses.replace(select_targets(_wide_model(), cfg)[0], sparsity=0.2)
    masks = compute_masks([target], cfg)
    assert _pruned(masks.masks[target.name]) == round(0.2 * target.param.numel())


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_random_exact_counts_and_seeded(scope: str) -> None:
    model = _wide_model()
    cfg = RandomPruning(scope=scope, sparsity=0.6)
    targets = select_targets(model, cfg)
    a = compute_masks(targets, cfg, generator=torch.Generator().manual_seed(1))
    b = compute_masks(targets, cfg, generator=torch.Generator().manual_seed(1))
    c = compute_masks(targets, cfg, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert any(not torch.equal(a.masks[n], c.masks[n]) for n in a.masks)
    total = sum(t.param.numel() for t in targets)
    if scope == "global":
        assert a.num_pruned() == round(0.6 * total)
    for t in targets:
        s = a.per_param_sparsity()[t.name]
        if scope == "layerwise":
            assert _pruned(a.masks[t.name]) == round(0.6 * t.param.numel())
        else:
            assert abs(s - 0.6) < 0.05  # uniform over all weights: each big layer lands near the target
    magnitude = compute_masks(targets, MagnitudePruning(scope=scope, sparsity=0.6))
    overlap = sum(int((a.masks[n] == magnitude.masks[n]).sum()) for n in a.masks) / total
    assert overlap < 0.65  # not magnitude in disguise (random vs magnitude agree on ~52% of entries)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_channel_zeroes_whole_lowest_norm_rows(norm: str) -> None:
    model = _wide_model()
    cfg = ChannelPruning(sparsity=0.4, norm=norm)
    targets = select_targets(model, cfg)
    masks = compute_masks(targets, cfg)
    for t in targets:
        mask = masks.masks[t.name]
        rows = mask.reshape(mask.shape[0], -1)
        assert torch.all(rows.all(dim=1) | (~rows).all(dim=1))  # each output channel entirely kept or removed
        assert int((~rows.all(dim=1)).sum()) == round(0.4 * mask.shape[0])
        module = copy.deepcopy(dict(model.named_modules())[t.module_name])
        ref = tprune.ln_structured(module, "weight", amount=0.4, n=1 if norm == "l1" else 2, dim=0)
        assert torch.equal(mask, ref.weight_mask.bool())


def test_channel_always_keeps_one_channel() -> None:
    model = nn.Sequential(nn.Linear(4, 1), nn.Linear(1, 3))
    cfg = ChannelPruning(sparsity=0.9)
    masks = compute_masks(select_targets(model, cfg), cfg)
    assert masks.masks["0.weight"].all()  # round(0.9 * 1) = 1 would remove the only output


def test_nm_exactly_n_per_group() -> None:
    model = small_cnn()
    cfg = NMPruning(n=2, m=4)
    targets = select_targets(model, cfg)
    masks = compute_masks(targets, cfg)
    for t in targets:
        mask = masks.masks[t.name]
        groups = mask.reshape(mask.shape[0], -1).reshape(mask.shape[0], -1, 4)
        assert torch.all(groups.sum(dim=-1) == 2)
        kept = t.param.detach().abs().reshape(groups.shape)
        # the kept two are the largest of their group
        assert torch.all(kept.masked_fill(~groups, float("inf")).amin(-1) >= kept.masked_fill(groups, 0).amax(-1))
    assert masks.sparsity() == pytest.approx(0.5)


def test_nm_1_of_8_and_dense_override() -> None:
    model = small_cnn()
    cfg = NMPruning(n=1, m=8, overrides={"0": 0.0})  # conv 0 has 4*3*3 = 36 inputs: not a multiple of 8
    masks = compute_masks(select_targets(model, cfg), cfg)
    assert masks.masks["0.weight"].all()
    assert torch.all(masks.masks["3.weight"].reshape(16, -1, 8).sum(-1) == 1)


def test_nm_indivisible_input_names_the_layer() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2))  # 3*3*3 = 27 inputs per output
    cfg = NMPruning()
    with pytest.raises(UnsupportedError, match=r"'0\.weight'.*27"):
        compute_masks(select_targets(model, cfg), cfg)


def test_nm_gradual_reaches_pattern_at_the_end() -> None:
    model = small_cnn()
    cfg = NMPruning(n=2, m=4)
    targets = select_targets(model, cfg)
    final = compute_masks(targets, cfg)
    half = compute_masks(targets, cfg, level=0.25)
    assert half.sparsity() == pytest.approx(0.25, abs=0.01)
    for n in final.masks:
        assert torch.all(half.masks[n] | ~final.masks[n] == torch.ones_like(final.masks[n]))  # prunes a subset
    assert all(torch.equal(final.masks[n], compute_masks(targets, cfg, level=0.5).masks[n]) for n in final.masks)


@pytest.mark.parametrize(
    "cfg", [MagnitudePruning(sparsity=0.8, overrides={"0": 0.4}), RandomPruning(scope="global", sparsity=0.8)]
)
def test_level_scales_every_target(cfg: MagnitudePruning | RandomPruning) -> None:
    model = _wide_model()
    targets = select_targets(model, cfg)
    masks = compute_masks(targets, cfg, level=0.4, generator=torch.Generator().manual_seed(0))
    per = masks.per_param_sparsity()
    tolerance = 1e-3 if targets[0].overridden else 0.02  # global random: a layer's share varies a little
    assert per["0.weight"] == pytest.approx(targets[0].sparsity / 2, abs=tolerance)
    pool = [t for t in targets if not t.overridden]
    pruned = sum(_pruned(masks.masks[t.name]) for t in pool)
    assert pruned == round(0.4 * sum(t.param.numel() for t in pool))
    assert compute_masks(targets, cfg, level=0.0).sparsity() == 0.0


@pytest.mark.parametrize(
    "cfg",
    [
        MagnitudePruning(sparsity=0.7),
        MagnitudePruning(scope="layerwise", sparsity=0.7),
        RandomPruning(sparsity=0.7),
        ChannelPruning(sparsity=0.5),
        NMPruning(n=2, m=4),
    ],
    ids=lambda c: f"{c.method}",
)
def test_every_method_on_every_format(any_format: nn.Module, cfg: MagnitudePruning) -> None:
    targets = select_targets(any_format, cfg)
    masks = compute_masks(targets, cfg)
    before = any_format(EXAMPLE).detach()
    masks.apply(any_format)
    params = dict(any_format.named_parameters())
    for t in targets:
        assert torch.all(params[t.name][~masks.masks[t.name]] == 0)
    assert masks.sparsity() == pytest.approx(cfg.sparsity, abs=0.02)
    assert not torch.allclose(any_format(EXAMPLE), before)
