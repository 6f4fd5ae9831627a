"""Shared fixtures: the digits dataset and a trained digits CNN saved in every input format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.support.digits import train_digits_cnn, write_digits_npz


@pytest.fixture(autouse=True)
def _no_saved_login(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # The CLI reads `prunekit login`'s config file: never the developer's own (tests/client/test_cli_login.py).
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "no-config-home"))
    monkeypatch.delenv("PRUNEKIT_CONTEXT", raising=False)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("digits")


@pytest.fixture(scope="session")
def digits_npz(digits_dir: Path) -> Path:
    return write_digits_npz(digits_dir / "digits.npz")


@pytest.fixture(scope="session")
def digits_unlabelled_npz(digits_dir: Path) -> Path:
    return write_digits_npz(digits_dir / "digits_x.npz", labelled=False)


@pytest.fixture(scope="session")
def trained_cnn() -> torch.nn.Module:
    return train_digits_cnn()


@pytest.fixture(scope="session")
def torchscript_model(trained_cnn: torch.nn.Module, digits_dir: Path) -> Path:
    path = digits_dir / "cnn_scripted.bin"  # misleading extension on purpose: format comes from content
    torch.jit.save(torch.jit.script(trained_cnn), str(path))
    return path


@pytest.fixture(scope="session")
def export_model(trained_cnn: torch.nn.Module, digits_dir: Path) -> Path:
    path = digits_dir / "cnn.pt2"
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(trained_cnn, (torch.zeros(2, 1, 8, 8),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, str(path))
    return path


@pytest.fixture(scope="session")
def state_dict_model(trained_cnn: torch.nn.Module, digits_dir: Path) -> Path:
    path = digits_dir / "cnn.safetensors"
    save_file({k: v.contiguous() for k, v in trained_cnn.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def state_dict_pt(trained_cnn: torch.nn.Module, digits_dir: Path) -> Path:
    path = digits_dir / "cnn_state.pt"
    torch.save(trained_cnn.state_dict(), str(path))
    return path
