"""Layer widths after structural pruning: recorded per changed layer, and applied to a fresh architecture so the
sidecar state-dict (``model.state.safetensors`` + ``model.widths.json``) loads into it with ``strict=True``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from worker.engine.errors import InvalidModelError

Widths = dict[str, dict[str, Any]]
"""Module name -> new sizes, e.g. {"layer1.0.conv1": {"in_channels": 32, "out_channels": 32, "groups": 1}}."""

Shapes = dict[str, dict[str, tuple[int, ...]]]

# Per module type: the attributes recorded in `widths` and restored by `rebuild_from_widths`.
WIDTH_ATTRS: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (nn.modules.conv._ConvNd, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (nn.modules.batchnorm._NormBase, ("num_features",)),  # BatchNorm*, InstanceNorm*
    (nn.GroupNorm, ("num_channels", "num_groups")),
    (nn.LayerNorm, ("normalized_shape",)),
    (nn.PReLU, ("num_parameters",)),
    (nn.MultiheadAttention, ("embed_dim", "num_heads", "head_dim", "kdim", "vdim")),  # out_proj is its own Linear
    (nn.RNNBase, ("input_size", "hidden_size", "proj_size")),  # LSTM, GRU, RNN
)
_GATES = {"LSTM": 4, "GRU": 3}  # weight rows per hidden unit; plain RNNs have 1


def rebuild_from_widths(arch_builder: Callable[[], nn.Module], widths: Widths) -> nn.Module:
    """Build the architecture, then shrink the layers named in `widths`; load the pruned state dict into it.

    Parameters of shrunk layers are left uninitialized: `load_state_dict(strict=True)` fills them.
    """
    module = arch_builder()
    modules = dict(module.named_modules())
    for name, sizes in widths.items():
        if name not in modules:
            raise InvalidModelError(f"layer widths name {name!r}, which this architecture does not have")
        _resize(name, modules[name], sizes)
    return module


def direct_shapes(model: nn.Module) -> Shapes:
    """Module name -> shapes of its own parameters and buffers."""
    return {
        name: {
            n: tuple(t.shape)
            for n, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
            if t is not None
        }
        for name, m in model.named_modules()
    }


def layer_widths(model: nn.Module, names: dict[nn.Module, str], before: Shapes) -> Widths:
    """The sizes of every layer whose tensors changed: its size attributes, or raw shapes for other modules."""
    after = direct_shapes(model)
    widths: Widths = {}
    for m, name in names.items():
        if after.get(name) == before.get(name):
            continue
        attrs = attrs_of(m)
        if attrs is None:  # not a standard layer: record raw tensor shapes
            widths[name] = {"shapes": {n: list(s) for n, s in after[name].items()}}
        else:
            widths[name] = {
                a: (list(v) if isinstance(v, tuple) else int(v)) for a, v in ((a, getattr(m, a)) for a in attrs)
            }
    return widths


def attrs_of(m: nn.Module) -> tuple[str, ...] | None:
    """The size attributes recorded for a standard layer; None for other modules."""
    for cls, attrs in WIDTH_ATTRS:
        if isinstance(m, cls):
            return attrs
    return None


def _resize(name: str, m: nn.Module, sizes: dict[str, Any]) -> None:
    """Set `m`'s size attributes and reallocate its parameters/buffers to match."""
    attrs = attrs_of(m)
    if attrs is None:
        shapes = sizes.get("shapes")
        if not isinstance(shapes, dict):
            raise InvalidModelError(f"layer widths for {name!r} ({type(m).__name__}) need a 'shapes' entry")
        for tensor_name, shape in shapes.items():
            _replace(m, tensor_name, tuple(int(s) for s in shape))
        return
    unknown = set(sizes) - set(attrs)
    if unknown:
        raise InvalidModelError(f"layer widths for {name!r} ({type(m).__name__}) have unknown keys {sorted(unknown)}")
    for attr, value in sizes.items():
        setattr(m, attr, tuple(int(v) for v in value) if isinstance(value, list) else int(value))
    for tensor_name, shape in _tensor_shapes(m).items():
        _replace(m, tensor_name, shape)


def _tensor_shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    """The parameter/buffer shapes a standard layer has at its current size attributes."""
    if isinstance(m, nn.modules.conv._ConvNd):
        k = tuple(m.kernel_size)
        shape = (
            (m.in_channels, m.out_channels // m.groups, *k)
            if m.transposed
            else (m.out_channels, m.in_channels // m.groups, *k)
        )
        return {"weight": shape, "bias": (m.out_channels,)}
    if isinstance(m, nn.Linear):
        return {"weight": (m.out_features, m.in_features), "bias": (m.out_features,)}
    if isinstance(m, nn.modules.batchnorm._NormBase):
        return dict.fromkeys(("weight", "bias", "running_mean", "running_var"), (m.num_features,))
    if isinstance(m, nn.GroupNorm):
        return dict.fromkeys(("weight", "bias"), (m.num_channels,))
    if isinstance(m, nn.LayerNorm):
        return dict.fromkeys(("weight", "bias"), tuple(m.normalized_shape))
    if isinstance(m, nn.PReLU):
        return {"weight": (m.num_parameters,)}
    if isinstance(m, nn.MultiheadAttention):
        return _attention_shapes(m)
    if isinstance(m, nn.RNNBase):
        return _recurrent_shapes(m)
    return {}


def _attention_shapes(m: nn.MultiheadAttention) -> dict[str, tuple[int, ...]]:
    e = m.embed_dim
    return {
        "in_proj_weight": (3 * e, e),
        "q_proj_weight": (e, e),
        "k_proj_weight": (e, m.kdim),
        "v_proj_weight": (e, m.vdim),
        "in_proj_bias": (3 * e,),
        "bias_k": (1, 1, e),
        "bias_v": (1, 1, e),
    }


def _recurrent_shapes(m: nn.RNNBase) -> dict[str, tuple[int, ...]]:
    rows = _GATES.get(m.mode, 1) * m.hidden_size
    out = m.proj_size or m.hidden_size
    directions = ["", "_reverse"] if m.bidirectional else [""]
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(m.num_layers):
        for sfx in directions:
            inputs = m.input_size if layer == 0 else out * len(directions)
            shapes |= {f"weight_ih_l{layer}{sfx}": (rows, inputs), f"weight_hh_l{layer}{sfx}": (rows, out)}
            shapes |= {f"bias_ih_l{layer}{sfx}": (rows,), f"bias_hh_l{layer}{sfx}": (rows,)}
            if m.proj_size:
                shapes[f"weight_hr_l{layer}{sfx}"] = (m.proj_size, m.hidden_size)
    return shapes


def _replace(m: nn.Module, tensor_name: str, shape: tuple[int, ...]) -> None:
    """Swap a parameter or buffer for an uninitialized one of `shape` (same dtype/device); None stays None."""
    old = getattr(m, tensor_name, None)
    if old is None:
        return
    new = torch.empty(shape, dtype=old.dtype, device=old.device)
    if isinstance(old, nn.Parameter):
        setattr(m, tensor_name, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(m, tensor_name, new)
