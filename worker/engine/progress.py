"""Progress reporting: stages with an overall percent, plus free-form events (per-epoch metrics)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

# Share of the overall percent each stage covers; their order is the order a compress job runs.
STAGE_WEIGHTS: dict[str, float] = {
    "load": 5,
    "baseline": 10,
    "prune": 10,
    "finetune": 55,
    "save": 5,
    "evaluate": 10,
    "quantize": 5,
    "report": 5,
}


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    percent: float
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[ProgressEvent], None]


def null_progress(_: ProgressEvent) -> None:
    """A progress sink that drops everything."""


class StageProgress:
    """Turns (stage, fraction of that stage) into overall percent and forwards it.

    The sink may raise JobCanceledError: that is how a running job learns it was canceled.
    """

    def __init__(self, sink: ProgressFn | None = None, weights: dict[str, float] | None = None) -> None:
        self._sink = sink or null_progress
        self._weights = dict(weights or STAGE_WEIGHTS)
        self._total = sum(self._weights.values())

    def _offset(self, stage: str) -> float:
        offset = 0.0
        for name, weight in self._weights.items():
            if name == stage:
                return offset
            offset += weight
        return offset

    def update(self, stage: str, fraction: float = 0.0, message: str = "", **metrics: Any) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        weight = self._weights.get(stage, 0.0)
        percent = 100.0 * (self._offset(stage) + weight * fraction) / self._total
        self._sink(ProgressEvent(stage=stage, percent=round(percent, 2), message=message, metrics=metrics))
