"""The layers Wanda and SparseGPT can calibrate, seen as matrices: weights as ``[groups, rows, columns]`` and the
layer's inputs as ``[groups, tokens, columns]`` of the same width (nn.Linear, transformers' Conv1D, nn.Conv1d/2d).

A conv's columns are its unfolded receptive fields in the order of ``weight.reshape(out, -1)``; transformers'
Conv1D (GPT-2) stores its weight as ``[in, out]``, so its matrix is the transpose.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worker.engine.pruning.targets import PruneTarget


def _is_hf_conv1d(module: nn.Module) -> bool:
    utils = sys.modules.get("transformers.pytorch_utils")  # only loaded when a Hugging Face model is
    return utils is not None and isinstance(module, utils.Conv1D)


@dataclass(frozen=True)
class LayerView:
    """One target weight of a linear or conv layer as matrices."""

    name: str  # the target's parameter name
    module: nn.Module

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight  # type: ignore[return-value]

    @property
    def transposed(self) -> bool:
        return _is_hf_conv1d(self.module)

    @property
    def groups(self) -> int:
        return int(getattr(self.module, "groups", 1)) if isinstance(self.module, nn.Conv1d | nn.Conv2d) else 1

    @property
    def width(self) -> int:
        """Columns per row: the reduction size (inputs each output sums over, per group)."""
        w = self.weight
        return int(w.shape[0]) if self.transposed else math.prod(w.shape[1:])

    def matrix(self) -> torch.Tensor:
        """A float32 copy of the weight as ``[groups, rows, width]``."""
        w = self.weight.detach().float()
        w = w.t() if self.transposed else w.reshape(w.shape[0], -1)
        return w.reshape(self.groups, -1, self.width).clone()

    def to_param(self, mat: torch.Tensor) -> torch.Tensor:
        """A ``[groups, rows, width]`` tensor (weights or a mask) back in the parameter's shape."""
        flat = mat.reshape(-1, self.width)
        return flat.t().contiguous() if self.transposed else flat.reshape(self.weight.shape)

    def columns(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's input ``x`` as ``[groups, tokens, width]`` float32 columns (a conv's receptive fields)."""
        m = self.module
        if not isinstance(m, nn.Conv1d | nn.Conv2d):
            return x.detach().reshape(1, -1, self.width).float()
        x = x.detach().float()
        if x.dim() == m.weight.dim() - 1:  # an unbatched conv input
            x = x.unsqueeze(0)
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        x = F.pad(x, m._reversed_padding_repeated_twice, mode=mode)
        kernel, stride, dilation = m.kernel_size, m.stride, m.dilation
        if isinstance(m, nn.Conv1d):  # as a 2-D conv of height 1
            x, kernel, stride, dilation = x.unsqueeze(2), (1, *kernel), (1, *stride), (1, *dilation)
        cols = F.unfold(x, kernel, dilation=dilation, stride=stride)  # [B, in * K, L]
        cols = cols.reshape(cols.shape[0], self.groups, self.width, -1)
        return cols.permute(1, 0, 3, 2).reshape(self.groups, -1, self.width)


def layer_view(root: nn.Module, target: PruneTarget) -> LayerView | None:
    """The view of a target that is the weight of a linear or 1-D/2-D conv layer, else None."""
    if target.name.rsplit(".", 1)[-1] != "weight":
        return None
    try:
        module = root.get_submodule(target.module_name)
    except AttributeError:  # TorchScript and exported graphs keep no such submodule
        return None
    supported = isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d) or _is_hf_conv1d(module)
    if not supported or getattr(module, "weight", None) is not target.param:
        return None
    return LayerView(target.name, module)
