"""Target selection by shape and name: same answer for eager, TorchScript and torch.export models."""

from __future__ import annotations

import pydantic
import pytest
from torch import nn

from prunekit.spec.pruning import MagnitudePruning, NMPruning
from worker.engine.errors import InvalidSpecError
from worker.engine.pruning import select_targets

CONVS_AND_HIDDEN = ["0.weight", "3.weight", "8.weight"]


def _names(module: nn.Module, **cfg: object) -> list[str]:
    return [t.name for t in select_targets(module, MagnitudePruning(**cfg))]


def test_defaults_skip_norm_bias_and_classifier(any_format: nn.Module) -> None:
    targets = select_targets(any_format, MagnitudePruning(sparsity=0.4))
    assert [t.name for t in targets] == CONVS_AND_HIDDEN
    assert [t.kind for t in targets] == ["conv", "conv", "linear"]
    assert [t.module_name for t in targets] == ["0", "3", "8"]
    assert all(t.sparsity == 0.4 for t in targets)
    params = dict(any_format.named_parameters())
    assert all(t.param is params[t.name] for t in targets)  # the module's own parameters, not copies


def test_flags_add_norm_bias_and_classifier(any_format: nn.Module) -> None:
    kinds = {t.name: t.kind for t in select_targets(any_format, MagnitudePruning(prune_normalization=True))}
    assert kinds["1.weight"] == "norm" and "1.bias" not in kinds and "10.weight" not in kinds
    kinds = {t.name: t.kind for t in select_targets(any_format, MagnitudePruning(prune_bias=True))}
    assert kinds["0.bias"] == "bias" and kinds["1.bias"] == "bias" and "1.weight" not in kinds
    kinds = {t.name: t.kind for t in select_targets(any_format, MagnitudePruning(prune_classifier=True))}
    assert kinds["10.weight"] == "linear"


def test_include_exclude_patterns(cnn: nn.Module) -> None:
    assert _names(cnn, include=["0.*", "8.*"]) == ["0.weight", "8.weight"]
    assert _names(cnn, exclude=["[03].weight"]) == ["8.weight"]


def test_overrides_by_module_or_parameter_name(any_format: nn.Module) -> None:
    cfg = MagnitudePruning(sparsity=0.5, overrides={"0": 0.2, "3.weight": 0.7, "[38]": 0.9})
    got = {t.name: (t.sparsity, t.overridden) for t in select_targets(any_format, cfg)}
    # "[38]" comes after "3.weight" and also matches module "3": the later pattern wins.
    assert got == {"0.weight": (0.2, True), "3.weight": (0.9, True), "8.weight": (0.9, True)}


def test_override_matching_nothing_is_rejected(cnn: nn.Module) -> None:
    with pytest.raises(InvalidSpecError) as err:
        select_targets(cnn, MagnitudePruning(overrides={"features.0": 0.3}))
    assert "features.0" in err.value.message and "'0.weight'" in err.value.message
    assert err.value.code == "invalid_spec"


def test_override_of_excluded_classifier_says_why(cnn: nn.Module) -> None:
    with pytest.raises(InvalidSpecError, match="prune_classifier"):
        select_targets(cnn, MagnitudePruning(overrides={"10": 0.3}))


def test_no_targets_is_rejected(cnn: nn.Module) -> None:
    with pytest.raises(InvalidSpecError, match="No parameters to prune"):
        select_targets(cnn, MagnitudePruning(include=["nothing.*"]))
    with pytest.raises(InvalidSpecError):
        select_targets(nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2)), MagnitudePruning())  # only a classifier


def test_nm_overrides_only_dense_or_nm(cnn: nn.Module) -> None:
    assert {t.sparsity for t in select_targets(cnn, NMPruning(overrides={"0": 0.0}))} == {0.0, 0.5}
    with pytest.raises(InvalidSpecError, match="N:M"):
        select_targets(cnn, NMPruning(overrides={"0": 0.3}))


@pytest.mark.parametrize("sparsity", [1.0, 1.5, -0.1])
def test_spec_rejects_sparsity_outside_0_1(sparsity: float) -> None:
    with pytest.raises(pydantic.ValidationError):
        MagnitudePruning(sparsity=sparsity)
    with pytest.raises(pydantic.ValidationError):
        MagnitudePruning(overrides={"0": sparsity})


def test_classification_by_shape_and_name() -> None:
    model = nn.ModuleDict(
        {
            "attn": nn.MultiheadAttention(8, 2),  # in_proj_weight: 2-D, name ends in "weight"
            "emb": nn.Conv1d(2, 4, 3),
            "head": nn.Linear(8, 2),
        }
    )
    got = {t.name: t.kind for t in select_targets(model, MagnitudePruning(prune_bias=True))}
    assert got["attn.in_proj_weight"] == "linear" and got["attn.in_proj_bias"] == "bias"
    assert got["emb.weight"] == "conv" and "head.weight" not in got
