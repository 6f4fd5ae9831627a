"""The stages table (dense -> pruned -> fine-tuned -> quantized, side by side) for both renderers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prunekit.reporting.common import DASH, get, human_bytes, human_count, ms, num, pct

_LABELS = {"dense": "Dense", "pruned": "Pruned", "fine_tuned": "Fine-tuned", "quantized": "Quantized"}


@dataclass(frozen=True)
class StageTable:
    """Header and rows as text; `delivered` is the index of the delivered stage's row."""

    header: list[str]
    rows: list[list[str]]
    delivered: int | None


def _perplexity(stages: list[Mapping[str, Any]]) -> bool:
    return any(num(get(s, "val", "perplexity")) is not None for s in stages)


def _metric(stage: Mapping[str, Any], split: str, lm: bool) -> str:
    if lm:
        v = num(get(stage, split, "perplexity"))
        return DASH if v is None else f"{v:.3f}"
    return pct(get(stage, split, "accuracy"), missing=DASH)


def _latency(stage: Mapping[str, Any]) -> str:
    value = ms(stage.get("latency_ms"), missing=DASH)
    runtime = stage.get("runtime")
    return f"{value} ({runtime})" if value != DASH and runtime else value


def stage_table(report: Mapping[str, Any]) -> StageTable | None:
    """The table's text, or None for reports without stages (older reports, analysis kinds)."""
    stages = [s for s in report.get("stages") or [] if isinstance(s, Mapping)]
    if not stages:
        return None
    lm = _perplexity(stages)
    what = "perplexity" if lm else "accuracy"
    header = ["Stage", f"Val {what}", f"Train {what}", "Size on disk", "Latency", "Nonzero params", "File", "Note"]
    rows, delivered = [], None
    for i, s in enumerate(stages):
        name = _LABELS.get(str(s.get("name")), str(s.get("name")))
        if s.get("delivered"):
            name, delivered = f"{name} (delivered)", i
        rows.append(
            [
                name,
                _metric(s, "val", lm),
                _metric(s, "train", lm),
                human_bytes(s.get("artifact_bytes"), missing=DASH),
                _latency(s),
                human_count(s.get("params_nonzero"), missing=DASH),
                str(s.get("artifact") or DASH),
                str(s.get("note") or ""),
            ]
        )
    return StageTable(header, rows, delivered)
