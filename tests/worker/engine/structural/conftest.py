"""Small models for structural-pruning tests: the builtin digits CNN and tiny resnet, plus a concat/grouped net."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch_pruning as tp
from torch import nn

from worker.engine.models.builtin import DigitsCNN, TinyResNet


@pytest.fixture(autouse=True)
def _quiet_jit_deprecation() -> None:
    # torch.jit.* warns FutureWarning on every call in torch 2.14; TorchScript is still a supported output.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")


class ConcatGroupedNet(nn.Module):
    """Two branches joined by torch.cat (index mapping across a concat), then a grouped, not depthwise, conv."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.left = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(24, 24, 1), nn.BatchNorm2d(24), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=4), nn.BatchNorm2d(24), nn.ReLU())
        self.head = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))
        return self.head(self.grouped(x).mean(dim=(2, 3)))


class ConcatIntoGroupedNet(nn.Module):
    """A concatenation feeding a grouped conv directly: a coupling torch-pruning 1.6 cannot resolve."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 8, 3, padding=1)
        self.right = nn.Conv2d(3, 16, 1)
        self.grouped = nn.Conv2d(24, 24, 3, padding=1, groups=2)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.grouped(torch.relu(torch.cat([self.left(x), self.right(x)], dim=1)))
        return self.head(x.mean(dim=(2, 3)))


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so a misaligned channel would show in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


# name -> (builder, example input shape)
MODELS = {
    "digits_cnn": (DigitsCNN, (2, 1, 8, 8)),
    "tiny_resnet": (TinyResNet, (2, 1, 8, 8)),
    "concat_grouped": (ConcatGroupedNet, (2, 3, 8, 8)),
}


def make_model(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    builder, shape = MODELS[name]
    torch.manual_seed(seed)
    return randomize_norms(builder(), seed), torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))


def masked_copy(original: nn.Module, history: list[list], example_input: torch.Tensor) -> nn.Module:
    """The original model with every removed channel zeroed instead of removed (one-step history only).

    For each recorded root we rebuild the same dependency group on an unpruned copy and zero, in every
    layer whose OUTPUT channels the group removes, the weight rows and bias (conv/linear) and the scale
    AND shift (norm layers). A removed channel then carries exactly 0 everywhere, so the layers reading it
    (whose input channels were removed) see the same contribution, 0, as after physical removal.
    """
    model = copy.deepcopy(original)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, is_out, idxs in history:
            layer = modules[name]
            pruner = graph.get_pruner_of_module(layer)
            fn = pruner.prune_out_channels if is_out else pruner.prune_in_channels
            for dep, group_idxs in graph.get_pruning_group(layer, fn, idxs):
                target = dep.target.module
                if not graph.is_out_channel_pruning_fn(dep.handler) or not isinstance(target, nn.Module):
                    continue
                ix = torch.as_tensor(list(group_idxs), dtype=torch.long)
                if isinstance(target, nn.modules.conv._ConvNd | nn.Linear):
                    if getattr(target, "transposed", False):
                        target.weight[:, ix] = 0
                    else:
                        target.weight[ix] = 0
                    if target.bias is not None:
                        target.bias[ix] = 0
                elif isinstance(target, nn.modules.batchnorm._BatchNorm):
                    target.weight[ix] = 0
                    target.bias[ix] = 0
    return model
