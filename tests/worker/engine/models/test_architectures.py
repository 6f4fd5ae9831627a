"""The architecture registry: torchvision without downloads, entry-point namespaces, the built-ins."""

from __future__ import annotations

import warnings
from importlib import metadata

import pytest
import torch

from worker.engine.errors import InvalidModelError
from worker.engine.models.architectures import ENTRY_POINT_GROUP, build_architecture, known_architectures
from worker.engine.models.builtin import DigitsCNN, TinyResNet


def test_builtin_namespace_is_an_installed_entry_point() -> None:
    names = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert names.get("prunekit") == "worker.engine.models.builtin:ARCHITECTURES"


@pytest.mark.parametrize(("name", "cls"), [("prunekit/digits_cnn", DigitsCNN), ("prunekit/tiny_resnet", TinyResNet)])
def test_builtins_build_script_and_export(name: str, cls: type) -> None:
    model = build_architecture(name, {"num_classes": 4}).eval()
    assert isinstance(model, cls)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (3, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            assert torch.allclose(torch.jit.script(model)(x), y, atol=1e-6)
        assert torch.allclose(torch.export.export(model, (x,)).module()(x), y, atol=1e-6)


def test_tiny_resnet_has_skip_and_depthwise_blocks() -> None:
    model = TinyResNet(width=8)
    assert model.separable[0].groups == 8
    assert model.separable[3].kernel_size == (1, 1)
    with torch.no_grad():  # with conv2's output zeroed the block must pass its input through (identity skip)
        model.block.bn2.weight.zero_()
        model.block.bn2.bias.zero_()
        h = torch.relu(torch.randn(2, 8, 8, 8))
        assert torch.allclose(model.block.eval()(h), h)


def test_torchvision_without_weights() -> None:
    model = build_architecture("torchvision/resnet18", {"num_classes": 3})
    assert model.fc.out_features == 3


def test_pretrained_weights_are_refused() -> None:
    with pytest.raises(InvalidModelError, match="may not set weights"):
        build_architecture("torchvision/resnet18", {"weights": "IMAGENET1K_V1"})


def test_unknown_names_list_known_ones() -> None:
    with pytest.raises(InvalidModelError, match=r"unknown architecture 'torchvision/resnet1000'.*resnet18"):
        build_architecture("torchvision/resnet1000", {})
    with pytest.raises(InvalidModelError, match=r"known namespaces: .*prunekit.*torchvision"):
        build_architecture("nobody/net", {})
    with pytest.raises(InvalidModelError, match="must look like 'namespace/name'"):
        build_architecture("resnet18", {})
    assert "prunekit/digits_cnn" in known_architectures("prunekit")


def test_bad_kwargs_are_reported() -> None:
    with pytest.raises(InvalidModelError, match=r"'prunekit/digits_cnn' rejected kwargs \{'depth': 3\}"):
        build_architecture("prunekit/digits_cnn", {"depth": 3})
