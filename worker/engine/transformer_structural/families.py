"""Where each supported transformer family keeps its heads, MLP channels, hidden size and blocks.

A family names, for one block, the layers whose outputs are the attention heads (q/k/v), the layer that reads
them (o), the MLP's producers and consumer, and the config fields that state the widths. Linear layers store
weights [out, in]; GPT-2's ``Conv1D`` stores them [in, out] (see ``surgery.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.spec.report import TransformerWidths
from worker.engine.errors import UnsupportedError

__all__ = ["FAMILIES", "AttentionParts", "Family", "MlpParts", "family_of", "widths_of"]


@dataclass(frozen=True)
class AttentionParts:
    """One block's attention: q/k/v producers (a fused GPT-2 c_attn is q, k and v at once) and the o consumer."""

    q: nn.Module
    k: nn.Module | None  # None: fused into q (GPT-2 c_attn, outputs q|k|v)
    v: nn.Module | None
    o: nn.Module
    attn: nn.Module  # the module whose attributes (head counts) forward reads


@dataclass(frozen=True)
class MlpParts:
    producers: tuple[nn.Module, ...]  # their outputs are the intermediate channels (c_fc; gate and up)
    consumer: nn.Module  # reads the intermediate channels (c_proj; down_proj; output.dense)


@dataclass(frozen=True)
class Family:
    """One transformer family: its blocks and the config fields of its widths."""

    name: str
    model_types: tuple[str, ...]
    blocks_path: str  # dotted path from the base model to the nn.ModuleList of blocks
    base_prefixes: tuple[str, ...]  # attribute of the task model holding the base model ("" for the base itself)
    tied_hidden: bool  # the config derives head size from hidden_size / heads: attention width == hidden size
    fields: dict[str, str]  # TransformerWidths field -> config attribute
    attention_parts: Any  # Callable[[nn.Module], AttentionParts]
    mlp_parts: Any  # Callable[[nn.Module], MlpParts]
    output_writers: tuple[str, ...] = ()  # modules outside the blocks whose outputs are hidden-sized (BERT pooler)

    def base(self, model: nn.Module) -> nn.Module:
        """The base model (GPT2Model, LlamaModel, BertModel) inside a task model."""
        for prefix in self.base_prefixes:
            inner = getattr(model, prefix, None) if prefix else None
            if isinstance(inner, nn.Module):
                return inner
        return model

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The blocks, in order."""
        found: Any = self.base(model)
        for part in self.blocks_path.split("."):
            found = getattr(found, part)
        if not isinstance(found, nn.ModuleList):
            raise UnsupportedError(f"the {self.name} model has no block list at {self.blocks_path}")
        return found

    def set_blocks(self, model: nn.Module, blocks: nn.ModuleList) -> None:
        """Replace the block list (depth pruning)."""
        owner: Any = self.base(model)
        *path, last = self.blocks_path.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, last, blocks)


def _gpt2_attention(block: nn.Module) -> AttentionParts:
    attn: Any = block.attn
    return AttentionParts(q=attn.c_attn, k=None, v=None, o=attn.c_proj, attn=attn)


def _gpt2_mlp(block: nn.Module) -> MlpParts:
    mlp: Any = block.mlp
    return MlpParts(producers=(mlp.c_fc,), consumer=mlp.c_proj)


def _llama_attention(block: nn.Module) -> AttentionParts:
    attn: Any = block.self_attn
    return AttentionParts(q=attn.q_proj, k=attn.k_proj, v=attn.v_proj, o=attn.o_proj, attn=attn)


def _llama_mlp(block: nn.Module) -> MlpParts:
    mlp: Any = block.mlp
    return MlpParts(producers=(mlp.gate_proj, mlp.up_proj), consumer=mlp.down_proj)


def _bert_attention(block: nn.Module) -> AttentionParts:
    attention: Any = block.attention
    self_attn = attention.self
    return AttentionParts(
        q=self_attn.query, k=self_attn.key, v=self_attn.value, o=attention.output.dense, attn=self_attn
    )


def _bert_mlp(block: nn.Module) -> MlpParts:
    b: Any = block
    return MlpParts(producers=(b.intermediate.dense,), consumer=b.output.dense)


_COMMON = {
    "num_attention_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_hidden_layers",
}

FAMILIES: tuple[Family, ...] = (
    Family(
        name="gpt2",
        model_types=("gpt2",),
        blocks_path="h",
        base_prefixes=("transformer",),
        tied_hidden=True,
        fields={
            "num_attention_heads": "n_head",
            "intermediate_size": "n_inner",
            "hidden_size": "n_embd",
            "num_hidden_layers": "n_layer",
        },
        attention_parts=_gpt2_attention,
        mlp_parts=_gpt2_mlp,
    ),
    Family(
        name="llama",
        model_types=("llama", "mistral", "qwen2"),
        blocks_path="layers",
        base_prefixes=("model",),
        tied_hidden=False,
        fields={**_COMMON, "num_key_value_heads": "num_key_value_heads", "head_dim": "head_dim"},
        attention_parts=_llama_attention,
        mlp_parts=_llama_mlp,
    ),
    Family(
        name="bert",
        model_types=("bert",),
        blocks_path="encoder.layer",
        base_prefixes=("bert",),
        tied_hidden=True,
        fields=_COMMON,
        attention_parts=_bert_attention,
        mlp_parts=_bert_mlp,
        output_writers=("pooler.dense", "cls.predictions.transform.dense"),
    ),
)
SUPPORTED = sorted(t for f in FAMILIES for t in f.model_types)


def family_of(config: Any) -> Family:
    """The family of a transformers config; other model types are refused, naming the supported ones."""
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise UnsupportedError(
        f"transformer_structural supports the model types {', '.join(SUPPORTED)}; this checkpoint is "
        f"{model_type!r}: use a mask method (magnitude, wanda, sparsegpt) for it"
    )


def widths_of(config: Any) -> TransformerWidths:
    """The widths a config states (key/value heads and head size derived as transformers does)."""
    family = family_of(config)
    get: dict[str, Any] = {name: getattr(config, attr, None) for name, attr in family.fields.items()}
    heads, hidden = int(get["num_attention_heads"]), int(get["hidden_size"])
    intermediate = get["intermediate_size"] or 4 * hidden  # GPT-2: n_inner None means 4 x n_embd
    head_dim = get.get("head_dim") or hidden // heads
    return TransformerWidths(
        num_attention_heads=heads,
        num_key_value_heads=int(get.get("num_key_value_heads") or heads),
        head_dim=int(head_dim),
        intermediate_size=int(intermediate),
        hidden_size=hidden,
        num_hidden_layers=int(get["num_hidden_layers"]),
    )


def write_widths(config: Any, widths: TransformerWidths, kept_layers: list[int] | None = None) -> None:
    """Rewrite the config's width fields (what save_pretrained writes to config.json)."""
    family = family_of(config)
    for name, attr in family.fields.items():
        setattr(config, attr, int(getattr(widths, name)))
    layer_types = getattr(config, "layer_types", None)
    if kept_layers is not None and isinstance(layer_types, list) and len(layer_types) > len(kept_layers):
        config.layer_types = [layer_types[i] for i in kept_layers]  # qwen2: per-block attention kinds


def is_norm(module: nn.Module) -> bool:
    """LayerNorm or RMSNorm over the hidden size (the residual stream)."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def weight_of(module: nn.Module) -> torch.Tensor:
    """The module's weight tensor."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise UnsupportedError(f"{type(module).__name__} has no weight tensor")
    return weight
