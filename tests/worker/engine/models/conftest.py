"""Small models with random weights, saved in every input format (fast: no training)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from worker.engine.models.builtin import DigitsCNN


@pytest.fixture(autouse=True)
def _quiet_jit_deprecation() -> Iterator[None]:
    # torch.jit.* warns FutureWarning on every call in torch 2.14; TorchScript is still a supported input.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        yield


@pytest.fixture(scope="module")
def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    model = DigitsCNN()
    with torch.no_grad():  # non-trivial BN statistics so a lost buffer would show up in outputs
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def files(cnn: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same model in each format, each under a misleading file name."""
    d = tmp_path_factory.mktemp("formats")
    out = {
        "torchscript": d / "model.safetensors",
        "export": d / "model.pt",
        "torch.save zip": d / "weights.pt2",
        "torch.save legacy": d / "weights.zip",
        "safetensors": d / "weights.pt",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(cnn), str(out["torchscript"]))
    with open(out["export"], "wb") as fh:  # a file object: torch.export.save would warn about the name
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(cnn, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
        torch.export.save(program, fh)
    torch.save(cnn.state_dict(), out["torch.save zip"])
    torch.save(cnn.state_dict(), out["torch.save legacy"], _use_new_zipfile_serialization=False)
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, str(out["safetensors"]))
    return out
