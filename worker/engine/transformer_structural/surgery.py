"""Removing heads, MLP channels, hidden dimensions and blocks from a transformers model in place.

Parameters are sliced in place (``param.data = ...``), so weights tied to each other (GPT-2's lm_head and
wte) stay one parameter and are sliced once. The attributes transformers reads in forward (head counts, split
sizes) and the config are updated, so the smaller model runs and ``save_pretrained`` writes a config.json that
``from_pretrained`` rebuilds exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.spec.report import TransformerWidths
from worker.engine.errors import UnsupportedError
from worker.engine.transformer_structural.families import (
    Family,
    family_of,
    is_norm,
    weight_of,
    widths_of,
    write_widths,
)

__all__ = ["Selection", "apply_selection", "hidden_layers_outside_blocks"]


@dataclass
class Selection:
    """What every kept block keeps: indices into the original model's heads, channels and hidden dimensions."""

    widths: TransformerWidths  # after
    kept_layers: list[int]  # original block indices, in order
    heads: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)  # block -> (query, key/value)
    mlp: dict[int, list[int]] = field(default_factory=dict)  # block -> intermediate channels kept
    hidden: list[int] | None = None  # hidden dimensions kept (None: all)


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # transformers.pytorch_utils.Conv1D: weight [in, out]


Done = set[tuple[int, int]]  # (id of a parameter, dim) already sliced: a tied parameter is sliced once per dim


def _slice(param: torch.Tensor | None, dim: int, index: torch.Tensor, done: Done | None = None) -> None:
    if param is None or (done is not None and (id(param), dim) in done):
        return
    param.data = param.data.index_select(dim, index.to(param.device)).contiguous()
    if done is not None:
        done.add((id(param), dim))


def select_out(module: nn.Module, index: torch.Tensor, done: Done | None = None) -> None:
    """Keep the outputs `index` of a Linear or Conv1D."""
    m: Any = module
    _slice(m.weight, 1 if _is_conv1d(m) else 0, index, done)
    _slice(getattr(m, "bias", None), 0, index, done)
    if _is_conv1d(m):
        m.nf = len(index)
    else:
        m.out_features = len(index)


def select_in(module: nn.Module, index: torch.Tensor, done: Done | None = None) -> None:
    """Keep the inputs `index` of a Linear or Conv1D."""
    m: Any = module
    _slice(m.weight, 0 if _is_conv1d(m) else 1, index, done)
    if _is_conv1d(m):
        m.nx = len(index)
    else:
        m.in_features = len(index)


def _head_index(heads: Sequence[int], head_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def _set_if_present(module: nn.Module, values: dict[str, int]) -> None:
    for name, value in values.items():
        if isinstance(getattr(module, name, None), int):
            setattr(module, name, value)


def _prune_heads(family: Family, block: nn.Module, q: list[int], kv: list[int], before: TransformerWidths) -> None:
    parts, d = family.attention_parts(block), before.head_dim
    q_index, kv_index = _head_index(q, d), _head_index(kv, d)
    if parts.k is None:  # GPT-2 c_attn: outputs q | k | v, each heads x head_dim wide
        inner = before.num_attention_heads * d
        select_out(parts.q, torch.cat([q_index, inner + q_index, 2 * inner + q_index]))
    else:
        select_out(parts.q, q_index)
        select_out(parts.k, kv_index)
        select_out(parts.v, kv_index if parts.v is not None else q_index)
    select_in(parts.o, q_index)
    width = len(q) * d
    _set_if_present(parts.attn, {
        "num_heads": len(q), "num_attention_heads": len(q), "num_key_value_heads": len(kv),
        "num_key_value_groups": len(q) // len(kv), "all_head_size": width, "embed_dim": width, "split_size": width,
    })  # fmt: skip


def _prune_mlp(family: Family, block: nn.Module, channels: list[int]) -> None:
    parts, index = family.mlp_parts(block), torch.tensor(channels)
    for producer in parts.producers:
        select_out(producer, index)
    select_in(parts.consumer, index)
    for module in block.modules():
        _set_if_present(module, {"intermediate_size": len(channels)})


def _drop_blocks(family: Family, model: nn.Module, kept: list[int]) -> None:
    blocks = family.blocks(model)
    if len(kept) == len(blocks):
        return
    new = nn.ModuleList([blocks[i] for i in kept])
    for position, block in enumerate(new):
        for module in block.modules():  # as a fresh load numbers them (caches, per-block attention kinds)
            _set_if_present(module, {"layer_idx": position})
    family.set_blocks(model, new)


def _block_names(family: Family, model: nn.Module) -> set[str]:
    prefix = next(n for n, m in model.named_modules() if m is family.blocks(model))
    return {n for n, _ in model.named_modules() if n.startswith(prefix + ".")}


def hidden_layers_outside_blocks(family: Family, model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Layers outside the blocks that touch the hidden size: (module, 'in' | 'both'); refuses unknown writers."""
    hidden, inside = widths_of(model.config).hidden_size, _block_names(family, model)
    found: list[tuple[nn.Module, str]] = []
    for name, module in model.named_modules():
        if name in inside or not (isinstance(module, nn.Linear) or _is_conv1d(module)):
            continue
        m: Any = module
        n_in, n_out = (m.nx, m.nf) if _is_conv1d(m) else (m.in_features, m.out_features)
        if any(name == w or name.endswith("." + w) for w in family.output_writers):
            found.append((module, "both"))
        elif n_out == hidden:
            raise UnsupportedError(
                f"hidden_size cannot be pruned: the layer {name!r} outside the blocks writes a hidden-sized output "
                "prunekit does not know how to follow; set hidden_size (and tied attention_heads) to 0"
            )
        elif n_in == hidden:
            found.append((module, "in"))  # heads reading the last hidden state: lm_head, score, classifier
    return found


def _prune_hidden(family: Family, model: nn.Module, kept: list[int]) -> None:
    old, index, done = widths_of(model.config).hidden_size, torch.tensor(kept), Done()
    outside = hidden_layers_outside_blocks(family, model)
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.embedding_dim == old:
            _slice(module.weight, 1, index, done)
            module.embedding_dim = len(kept)
        elif is_norm(module) and tuple(getattr(module, "weight", torch.empty(0)).shape) == (old,):
            _slice(weight_of(module), 0, index, done)
            _slice(getattr(module, "bias", None), 0, index, done)
            if isinstance(module, nn.LayerNorm):
                module.normalized_shape = (len(kept),)
        _set_if_present(module, {k: len(kept) for k in ("hidden_size", "embed_dim") if getattr(module, k, 0) == old})
    for block in family.blocks(model):
        attention, mlp = family.attention_parts(block), family.mlp_parts(block)
        for reader in (attention.q, attention.k, attention.v, *mlp.producers):
            if reader is not None:
                select_in(reader, index, done)
        for writer in (attention.o, mlp.consumer):
            select_out(writer, index, done)
    for module, role in outside:
        select_in(module, index, done)
        if role == "both":
            select_out(module, index, done)


def apply_selection(model: nn.Module, selection: Selection) -> None:
    """Remove what `selection` drops, in place, and rewrite model.config to the new widths."""
    config: Any = getattr(model, "config")  # noqa: B009 - the transformers config every submodule shares
    family, before = family_of(config), widths_of(config)
    with torch.no_grad():
        _drop_blocks(family, model, selection.kept_layers)
        for position, original in enumerate(selection.kept_layers):
            block = family.blocks(model)[position]
            if original in selection.heads:
                q, kv = selection.heads[original]
                _prune_heads(family, block, q, kv, before)
            if original in selection.mlp:
                _prune_mlp(family, block, selection.mlp[original])
        if selection.hidden is not None:
            _prune_hidden(family, model, selection.hidden)
    write_widths(config, selection.widths, selection.kept_layers)
