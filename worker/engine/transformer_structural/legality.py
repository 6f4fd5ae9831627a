"""Pre-flight: the widths a transformer_structural config asks for, or why they are illegal and what is legal.

Ratios are rounded to whole heads, channels and blocks. Head counts must suit the config: with grouped-query
attention whole key/value groups go (``gqa: groups``) or the same number of query heads in every group
(``within_groups``); Llama-style configs need hidden_size divisible by the head count; GPT-2 and BERT derive
the head size from hidden_size / heads, so there heads and hidden size go together. Runs on the config alone,
before any work (the job's load stage; a dry run can call ``plan_widths`` the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prunekit.spec.pruning import TransformerStructuralPruning
from prunekit.spec.report import TransformerWidths
from worker.engine.errors import InvalidSpecError
from worker.engine.transformer_structural.families import Family, family_of, widths_of

__all__ = ["HeadOption", "head_options", "legal_head_ratios", "plan_widths"]


@dataclass(frozen=True)
class HeadOption:
    """A legal attention shape: query heads and key/value heads kept in every layer."""

    heads: int
    kv_heads: int

    def ratio(self, before: TransformerWidths) -> float:
        """The attention_heads ratio that gives this shape."""
        return round(1.0 - self.heads / before.num_attention_heads, 4)


def head_options(before: TransformerWidths, gqa: str, hidden_after: int | None, tied: bool) -> list[HeadOption]:
    """Every legal smaller head count (most heads first); hidden_after None: any hidden size may follow."""
    n_q, n_kv = before.num_attention_heads, before.num_key_value_heads
    group = n_q // n_kv
    if n_kv == n_q or gqa == "groups":  # without GQA every head is its own group
        options = [HeadOption(k * group, k) for k in range(n_kv - 1, 0, -1)]
    else:
        options = [HeadOption(n_kv * j, n_kv) for j in range(group - 1, 0, -1)]
    if tied or hidden_after is None:
        return options
    return [o for o in options if hidden_after % o.heads == 0]  # transformers checks hidden_size % heads


def legal_head_ratios(config: Any, gqa: str = "groups") -> list[float]:
    """The attention_heads ratios this config accepts (hidden size unchanged, or changed with the heads if tied)."""
    family, before = family_of(config), widths_of(config)
    hidden = None if family.tied_hidden else before.hidden_size
    return [o.ratio(before) for o in head_options(before, gqa, hidden, family.tied_hidden)]


def _kept(total: int, ratio: float, scale: float) -> int:
    return round(total * (1.0 - ratio * scale))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ratios(options: list[HeadOption], before: TransformerWidths) -> str:
    shown = ", ".join(f"{o.ratio(before)} ({_count(o.heads, 'head')}, {o.kv_heads} key/value)" for o in options)
    return shown or "none (no smaller head count fits)"


@dataclass
class _Request:
    """One evaluation of the ratios (scaled by a budget's factor), collecting every problem."""

    family: Family
    before: TransformerWidths
    cfg: TransformerStructuralPruning
    scale: float
    snap: bool  # budgets: clamp to the nearest legal width instead of refusing
    problems: list[str]

    def refuse(self, message: str) -> None:
        if not self.snap:
            self.problems.append(message)

    def heads(self, hidden_after: int | None) -> HeadOption:
        b, ratio = self.before, self.cfg.attention_heads * self.scale
        full = HeadOption(b.num_attention_heads, b.num_key_value_heads)
        if ratio == 0 and (hidden_after is None or self.family.tied_hidden or hidden_after % full.heads == 0):
            return full
        options = head_options(b, self.cfg.gqa, hidden_after, self.family.tied_hidden)
        want = _kept(b.num_attention_heads, ratio, 1.0)
        if self.snap:
            fitting = [o for o in options if o.heads >= want]
            return fitting[-1] if fitting else full
        match = [o for o in options if o.heads == want]
        if not match:
            shape = f"{b.num_attention_heads} heads"
            if b.num_key_value_heads < b.num_attention_heads:
                shape += f", {b.num_key_value_heads} key/value heads, gqa '{self.cfg.gqa}'"
            self.refuse(
                f"attention_heads {self.cfg.attention_heads} keeps {want} of {b.num_attention_heads} heads, which "
                f"is not legal for this {self.family.name} config ({shape}); legal attention_heads: "
                f"{_ratios(options, b)}"
            )
            return full
        return match[0]

    def mlp(self) -> int:
        total, step = self.before.intermediate_size, self.cfg.round_to or 1
        kept = max(step, round(_kept(total, self.cfg.mlp, self.scale) / step) * step)
        if self.cfg.mlp > 0 and kept >= total:
            self.refuse(f"mlp {self.cfg.mlp} removes no channel of {total}: the least that removes some is "
                        f"{round(min(step, total - 1) / total, 4)}")  # fmt: skip
        return min(kept, total)

    def layers(self) -> int:
        total = self.before.num_hidden_layers
        kept = _kept(total, self.cfg.layers, self.scale)
        legal = ", ".join(str(round(k / total, 4)) for k in range(1, total))
        if self.cfg.layers > 0 and (kept >= total or kept < 1):
            self.refuse(
                f"layers {self.cfg.layers} keeps {kept} of {total} blocks; legal layers: {legal or 'none (one block)'}"
            )
        return min(max(kept, 1), total)

    def hidden(self, step: int) -> int:
        """Llama-style: the kept hidden size, a multiple of `step` (heads, round_to)."""
        total = self.before.hidden_size
        kept = max(step, round(_kept(total, self.cfg.hidden_size, self.scale) / step) * step)
        if self.cfg.hidden_size > 0 and kept >= total:
            self.refuse(f"hidden_size {self.cfg.hidden_size} removes nothing of {total} (sizes go in steps of "
                        f"{step}): the least that removes some is {round(step / total, 4)}")  # fmt: skip
        return min(kept, total)


def _attention_and_hidden(req: _Request) -> tuple[HeadOption, int]:
    b, cfg = req.before, req.cfg
    if req.family.tied_hidden:
        known = len(req.problems)
        option = req.heads(None)
        hidden = option.heads * b.head_dim
        want_hidden = _kept(b.hidden_size, cfg.hidden_size, req.scale)
        if not req.snap and want_hidden != hidden and len(req.problems) == known:  # one message per cause
            options = head_options(b, cfg.gqa, None, True)
            req.refuse(
                f"{req.family.name} derives the head size from hidden_size / heads ({b.hidden_size} / "
                f"{b.num_attention_heads}), so attention_heads and hidden_size must be removed together at the "
                f"same ratio (got {cfg.attention_heads} and {cfg.hidden_size}); legal: {_ratios(options, b)}"
            )
        return option, hidden
    if cfg.hidden_size == 0:
        return req.heads(b.hidden_size), b.hidden_size
    option = req.heads(None)
    return option, req.hidden(math.lcm(option.heads, cfg.round_to or 1))


def _check_model(req: _Request, config: Any, task: str) -> None:
    cfg, b = req.cfg, req.before
    if not any((cfg.attention_heads, cfg.mlp, cfg.hidden_size, cfg.layers)):
        req.problems.append(
            "nothing to remove: set at least one of attention_heads, mlp, hidden_size, layers above 0 (with "
            "target_params / target_speedup they are the ceilings)"
        )
    if task == "feature_extraction" and (cfg.hidden_size > 0 or (req.family.tied_hidden and cfg.attention_heads > 0)):
        req.problems.append(
            "hidden_size would change the width of the embeddings this encoder outputs (and its heads are tied to "
            "it); for feature extraction remove mlp channels and layers only"
        )
    if cfg.layers > 0 and getattr(config, "scale_attn_by_inverse_layer_idx", False):
        req.problems.append(
            "this config scales attention by 1 / (block index + 1): removing blocks would change the scaling of "
            "every later block when transformers reloads it, so layers must be 0"
        )
    if b.num_attention_heads % b.num_key_value_heads:
        req.problems.append("the config's head count is not a multiple of its key/value heads")


def plan_widths(
    config: Any, cfg: TransformerStructuralPruning, task: str, scale: float = 1.0, snap: bool = False
) -> TransformerWidths:
    """The widths every layer gets; InvalidSpecError naming the legal ratios when a ratio is not legal.

    ``scale`` multiplies every ratio (budget searches); ``snap`` clamps to legal widths instead of refusing.
    """
    family, before = family_of(config), widths_of(config)
    req = _Request(family, before, cfg, scale, snap, [])
    _check_model(req, config, task)
    option, hidden = _attention_and_hidden(req)
    after = TransformerWidths(
        num_attention_heads=option.heads,
        num_key_value_heads=option.kv_heads,
        head_dim=before.head_dim,
        intermediate_size=req.mlp(),
        hidden_size=hidden,
        num_hidden_layers=req.layers(),
    )
    if req.problems:
        raise InvalidSpecError("transformer_structural: " + "; ".join(req.problems))
    return after
