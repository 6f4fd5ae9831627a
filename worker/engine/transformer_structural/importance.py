"""How much each head, MLP channel, hidden dimension and block matters, and which to keep.

Activation importance follows Minitron (Muralidharan et al. 2024): the mean L2 norm of each head's attention
output, the mean |activation| of each MLP channel and of each hidden dimension after every norm, over the
calibration tokens (padding excluded). Blocks are ranked by how much they change their input, 1 - cosine
(ShortGPT's block influence). Magnitude importance uses weight norms instead, for jobs without data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.spec.report import TransformerWidths
from worker.engine.models.calling import caller, inputs_to
from worker.engine.transformer_structural.families import Family, is_norm, weight_of
from worker.engine.transformer_structural.surgery import Selection

__all__ = ["Scores", "activation_scores", "block_influence", "magnitude_scores", "select"]


@dataclass
class Scores:
    """Importance per block and width, on the original model (higher: keep)."""

    heads: torch.Tensor  # [blocks, query heads]
    mlp: torch.Tensor  # [blocks, intermediate channels]
    hidden: torch.Tensor  # [hidden]
    blocks: torch.Tensor  # [blocks]: 1 - cosine(input, output)
    source: str  # "activation" | "magnitude"
    rows: int = 0  # calibration rows the activations (or block influence) came from


class _Accumulator:
    """Masked means over tokens of per-feature values, fed by forward hooks."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None  # [batch, tokens] of the current batch, 1 for real tokens
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, float] = {}
        self.inputs: dict[int, torch.Tensor] = {}  # each block's input of the current batch

    def add(self, key: str, values: torch.Tensor) -> None:
        """values [batch, tokens, ...]: summed over the real tokens."""
        values = values.detach().float()
        if self.mask is not None and self.mask.shape == values.shape[:2]:
            weights = self.mask.to(values.dtype).reshape(*self.mask.shape, *([1] * (values.dim() - 2)))
            total, count = (values * weights).sum(dim=(0, 1)), float(self.mask.sum())
        else:
            total, count = values.sum(dim=(0, 1)), float(values.shape[0] * values.shape[1])
        self.sums[key] = self.sums.get(key, torch.zeros_like(total)) + total
        self.counts[key] = self.counts.get(key, 0.0) + count

    def mean(self, key: str) -> torch.Tensor:
        return self.sums[key].cpu() / max(self.counts[key], 1.0)


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple | list) else value


def _hooks(family: Family, model: nn.Module, acc: _Accumulator, widths: TransformerWidths) -> list[Any]:
    handles: list[Any] = []
    d = widths.head_dim
    for i, block in enumerate(family.blocks(model)):
        parts, mlp = family.attention_parts(block), family.mlp_parts(block)

        def on_heads(_m: nn.Module, args: tuple[Any, ...], i: int = i) -> None:
            x = args[0]
            acc.add(f"heads.{i}", x.reshape(*x.shape[:-1], -1, d).norm(dim=-1))

        def on_mlp(_m: nn.Module, args: tuple[Any, ...], i: int = i) -> None:
            acc.add(f"mlp.{i}", args[0].abs())

        def on_block_in(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], i: int = i) -> None:
            acc.inputs[i] = (args[0] if args else kwargs["hidden_states"]).detach()

        def on_block_out(_m: nn.Module, _args: Any, out: Any, i: int = i) -> None:
            cosine = F.cosine_similarity(acc.inputs.pop(i).float(), _first_tensor(out).detach().float(), dim=-1)
            acc.add(f"block.{i}", (1.0 - cosine).unsqueeze(-1))

        handles += [
            parts.o.register_forward_pre_hook(on_heads),
            mlp.consumer.register_forward_pre_hook(on_mlp),
            block.register_forward_pre_hook(on_block_in, with_kwargs=True),
            block.register_forward_hook(on_block_out),
        ]
    for module in model.modules():
        if is_norm(module) and tuple(weight_of(module).shape) == (widths.hidden_size,):
            handles.append(module.register_forward_hook(lambda _m, _a, out: acc.add("hidden", out.abs())))
    return handles


@torch.no_grad()
def _run(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], acc: _Accumulator, device: Any) -> int:
    rows, call = 0, None
    for batch in batches:
        call = call or caller(model, list(batch))
        moved = inputs_to(batch, device)
        acc.mask = moved.get("attention_mask")
        call(moved)
        rows += len(next(iter(batch.values())))
    return rows


def activation_scores(
    family: Family,
    model: nn.Module,
    widths: TransformerWidths,
    batches: Iterable[Mapping[str, torch.Tensor]],
    device: torch.device,
) -> Scores:
    """Minitron importance from a pass over the calibration batches (model in eval mode)."""
    acc = _Accumulator()
    handles = _hooks(family, model, acc, widths)
    try:
        rows = _run(model, batches, acc, device)
    finally:
        for handle in handles:
            handle.remove()
    count = len(family.blocks(model))
    return Scores(
        heads=torch.stack([acc.mean(f"heads.{i}") for i in range(count)]),
        mlp=torch.stack([acc.mean(f"mlp.{i}") for i in range(count)]),
        hidden=acc.mean("hidden"),
        blocks=torch.stack([acc.mean(f"block.{i}")[0] for i in range(count)]),
        source="activation",
        rows=rows,
    )


def block_influence(
    family: Family, model: nn.Module, widths: TransformerWidths, batches: Iterable[Mapping[str, torch.Tensor]],
    device: torch.device,
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """1 - cosine(block input, block output) per block, and the rows it was measured on."""
    scores = activation_scores(family, model, widths, batches, device)
    return scores.blocks, scores.rows


def _out_norms(module: nn.Module) -> torch.Tensor:
    """Squared L2 norm of each output's weights (Linear: rows; Conv1D: columns)."""
    w = weight_of(module).detach().float()
    return (w**2).sum(dim=0) if type(module).__name__ == "Conv1D" else (w**2).sum(dim=1)


def _in_norms(module: nn.Module) -> torch.Tensor:
    w = weight_of(module).detach().float()
    return (w**2).sum(dim=1) if type(module).__name__ == "Conv1D" else (w**2).sum(dim=0)


def magnitude_scores(family: Family, model: nn.Module, widths: TransformerWidths, blocks: torch.Tensor) -> Scores:
    """Weight-norm importance (no data): each head's q and o weights, each channel's in and out weights."""
    heads, mlp, hidden = [], [], torch.zeros(widths.hidden_size)
    n_q, d = widths.num_attention_heads, widths.head_dim
    for block in family.blocks(model):
        parts, mp = family.attention_parts(block), family.mlp_parts(block)
        q = _out_norms(parts.q)[: n_q * d]  # GPT-2's fused c_attn: its first third is q
        heads.append((q + _in_norms(parts.o)).reshape(n_q, d).sum(dim=1).cpu())
        mlp.append((sum(_out_norms(p) for p in mp.producers) + _in_norms(mp.consumer)).cpu())
        readers = [m for m in (parts.q, parts.k, parts.v, *mp.producers) if m is not None]
        hidden += sum(_in_norms(m).cpu() for m in readers) + _out_norms(parts.o).cpu() + _out_norms(mp.consumer).cpu()
    return Scores(torch.stack(heads), torch.stack(mlp), hidden, blocks, "magnitude")


def _top(values: torch.Tensor, k: int) -> list[int]:
    return sorted(int(i) for i in torch.topk(values, k).indices)


def _heads_of(scores: torch.Tensor, before: TransformerWidths, after: TransformerWidths) -> tuple[list[int], list[int]]:
    """(query heads, key/value heads) kept in one block: whole groups, or the best query heads of every group."""
    n_q, n_kv = before.num_attention_heads, before.num_key_value_heads
    group = n_q // n_kv
    if after.num_key_value_heads < n_kv or n_kv == n_q:
        kv = _top(scores.reshape(n_kv, group).sum(dim=1), after.num_key_value_heads)
        return [k * group + j for k in kv for j in range(group)], kv
    per_group = after.num_attention_heads // n_kv
    chosen = [k * group + j for k in range(n_kv) for j in _top(scores[k * group : (k + 1) * group], per_group)]
    return chosen, list(range(n_kv))


def select(scores: Scores, before: TransformerWidths, after: TransformerWidths) -> Selection:
    """The most important blocks, heads, channels and hidden dimensions, as many as `after` keeps."""
    kept = _top(scores.blocks, after.num_hidden_layers)
    selection = Selection(widths=after, kept_layers=kept)
    for layer in kept:
        if after.num_attention_heads < before.num_attention_heads:
            selection.heads[layer] = _heads_of(scores.heads[layer], before, after)
        if after.intermediate_size < before.intermediate_size:
            selection.mlp[layer] = _top(scores.mlp[layer], after.intermediate_size)
    if after.hidden_size < before.hidden_size:
        selection.hidden = _top(scores.hidden, after.hidden_size)
    return selection
