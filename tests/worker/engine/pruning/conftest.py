"""Small generated models for the pruning tests: eager, TorchScript-scripted and torch.export-loaded."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn


def small_cnn(seed: int = 0) -> nn.Sequential:
    """conv(4->8) bn relu conv(8->16) bn relu pool flatten linear(16->32) relu linear(32->10); in*kh*kw % 4 == 0."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


EXAMPLE = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))


def scripted(model: nn.Module) -> torch.jit.RecursiveScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated but still a supported input format
        return torch.jit.script(model)


def exported(model: nn.Module) -> nn.Module:
    """The GraphModule a user gets from a saved .pt2: ``torch.export.load(...).module()``."""
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model.eval(), (EXAMPLE,)), buf)
    buf.seek(0)
    return torch.export.load(buf).module()


@pytest.fixture
def cnn() -> nn.Sequential:
    return small_cnn()


@pytest.fixture(params=["eager", "torchscript", "export"])
def any_format(request: pytest.FixtureRequest) -> nn.Module:
    model = small_cnn()
    if request.param == "torchscript":
        return scripted(model)
    if request.param == "export":
        return exported(model)
    return model
