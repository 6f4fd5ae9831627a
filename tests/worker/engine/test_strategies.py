"""The pruning-strategy registry: one strategy per spec method, picked without branching on the config type."""

from __future__ import annotations

import ast
import inspect
from types import SimpleNamespace
from typing import Any, get_args

import pytest
import torch

from prunekit.spec import JobSpec
from prunekit.spec.pruning import (
    PruningSpec,
    SparseGPTPruning,
    StructuralPruning,
    TransformerStructuralPruning,
    WandaPruning,
)
from prunekit.spec.report import StructuralReport
from worker.engine import pipeline
from worker.engine.errors import InvalidSpecError, UnsupportedError
from worker.engine.models.handle import LoadedModel
from worker.engine.strategies import STRATEGIES, strategy_for
from worker.engine.strategies.calibrated import CalibratedStrategy
from worker.engine.strategies.mask import MaskStrategy
from worker.engine.strategies.structural import StructuralStrategy
from worker.engine.strategies.transformer import TransformerStructuralStrategy

PRUNING_CONFIGS = get_args(get_args(PruningSpec)[0])


def _method(cls: Any) -> str:
    return str(cls.model_fields["method"].default)


def test_registry_covers_every_method_of_the_spec() -> None:
    assert set(STRATEGIES) == {_method(cls) for cls in PRUNING_CONFIGS}


@pytest.mark.parametrize("cls", PRUNING_CONFIGS, ids=_method)
def test_strategy_for_each_method(cls: Any) -> None:
    cfg = cls()
    strategy = strategy_for(cfg)
    expected = StructuralStrategy if isinstance(cfg, StructuralPruning) else MaskStrategy
    if isinstance(cfg, WandaPruning | SparseGPTPruning):
        expected = CalibratedStrategy  # a MaskStrategy whose masks come from calibration data
    if isinstance(cfg, TransformerStructuralPruning):
        assert type(strategy) is TransformerStructuralStrategy and strategy.target_sparsity == 0.0  # ratios 0
        return
    assert type(strategy) is expected
    assert strategy.target_sparsity == (cfg.channel_sparsity if expected is StructuralStrategy else cfg.sparsity)


def test_unknown_method_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="unknown pruning method"):
        strategy_for(SimpleNamespace(method="nope"))  # type: ignore[arg-type]


def test_a_factory_refuses_another_strategys_config() -> None:
    with pytest.raises(InvalidSpecError):
        MaskStrategy.for_spec(StructuralPruning())
    with pytest.raises(InvalidSpecError):
        StructuralStrategy.for_spec(JobSpec().pruning)


@pytest.mark.parametrize(
    ("method", "input_format", "requested", "expected"),
    [
        ("magnitude", "state_dict", "same", "state_dict"),
        ("magnitude", "torchscript", "same", "torchscript"),
        ("magnitude", "state_dict", "torchscript", "torchscript"),
        ("structural", "state_dict", "same", "torchscript"),
        ("structural", "state_dict", "state_dict", "torchscript"),
        ("structural", "export", "same", "export"),
    ],
)
def test_output_format(method: str, input_format: str, requested: str, expected: str) -> None:
    model = LoadedModel(module=torch.nn.Linear(2, 2), format=input_format)  # type: ignore[arg-type]
    strategy = strategy_for(JobSpec.model_validate({"pruning": {"method": method}}).pruning)
    assert strategy.output_format(model, requested) == expected


@pytest.mark.parametrize("method", ["magnitude", "structural"])
def test_output_format_other_than_input_needs_a_state_dict(method: str) -> None:
    model = LoadedModel(module=torch.nn.Linear(2, 2), format="torchscript")
    strategy = strategy_for(JobSpec.model_validate({"pruning": {"method": method}}).pruning)
    with pytest.raises(InvalidSpecError, match="needs a state-dict input"):
        strategy.output_format(model, "state_dict")


def test_only_the_structural_strategy_fills_its_report_section() -> None:
    section = StructuralReport(
        widths={"conv": {"out_channels": 4}}, macs_before=10, macs_after=5, macs_reduction=2.0,
        params_before=8, params_after=4, seconds=0.1, steps=1, channel_ratio=0.5,
    )  # fmt: skip
    report: Any = SimpleNamespace(structural=None)
    strategy_for(JobSpec().pruning).fill_report(report)
    assert report.structural is None
    structural = StructuralStrategy(StructuralPruning())
    structural.section = section
    structural.fill_report(report)
    assert report.structural is section


def test_the_pipeline_does_not_branch_on_the_pruning_config() -> None:
    tree = ast.parse(inspect.getsource(pipeline))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "isinstance"]
    assert not any("pruning" in ast.unparse(c) for c in calls)
