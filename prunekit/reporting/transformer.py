"""The transformer_structural section (widths before/after, blocks removed, recovery) for both renderers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prunekit.reporting.common import DASH, get, human_count, num

# The config.json fields a reader compares, in the order a config lists them.
_WIDTHS = (
    ("num_hidden_layers", "Blocks"),
    ("hidden_size", "Hidden size"),
    ("num_attention_heads", "Attention heads"),
    ("num_key_value_heads", "Key/value heads"),
    ("head_dim", "Head dim"),
    ("intermediate_size", "MLP width"),
)


@dataclass(frozen=True)
class TransformerSection:
    """What the renderers show: a widths table, then short facts about the method."""

    rows: list[list[str]]
    facts: list[tuple[str, str]]


def transformer_section(report: Mapping[str, Any]) -> TransformerSection | None:
    """The section's rows, or None when the report has no transformer_structural part."""
    part = report.get("transformer_structural")
    if not isinstance(part, Mapping):
        return None
    rows = [
        _width_row(label, get(part, "widths_before", key), get(part, "widths_after", key)) for key, label in _WIDTHS
    ]
    rows.append(_width_row("Parameters", part.get("params_before"), part.get("params_after"), count=True))
    return TransformerSection(rows=rows, facts=_facts(part))


def _width_row(label: str, before: Any, after: Any, count: bool = False) -> list[str]:
    b, a = num(before), num(after)
    shown = (human_count(before), human_count(after)) if count else (_int(b), _int(a))
    change = DASH if b is None or a is None or b == 0 else f"{(a - b) / b * 100:+.0f}%"
    return [label, shown[0], shown[1], change]


def _int(value: float | None) -> str:
    return DASH if value is None else str(int(value))


def _facts(part: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = [("Model type", str(part.get("model_type") or DASH))]
    removed = part.get("removed_layers")
    if isinstance(removed, list) and removed:
        facts.append(("Blocks removed", ", ".join(str(i) for i in removed)))
    rows = part.get("calibration_rows")
    importance = str(part.get("importance") or DASH)
    facts.append(("Importance", f"{importance} ({rows} calibration rows)" if rows else importance))
    if part.get("budget"):
        reached = part.get("budget_reached")
        state = "" if reached is None else (" reached" if reached else " not reached")
        facts.append(("Budget", f"{part['budget']}{state}"))
    if num(part.get("measured_speedup")) is not None:
        facts.append(("Speedup measured in the search", f"{part['measured_speedup']:.2f}x"))
    facts.append(("After removal, before recovery", _split_text(part.get("after_pruning"))))
    facts.append(("Recovery", str(part.get("recovery") or "none")))
    facts += [("Note", str(n)) for n in part.get("notes") or []]
    return facts


def _split_text(split: Any) -> str:
    if not isinstance(split, Mapping):
        return "not measured"
    if num(split.get("perplexity")) is not None:
        return f"validation perplexity {split['perplexity']:.2f}"
    if num(split.get("accuracy")) is not None:
        return f"validation accuracy {split['accuracy'] * 100:.2f}%"
    return "not measured"
