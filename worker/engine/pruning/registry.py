"""Mask methods by the spec's ``method`` name. A new method = one module with ``compute`` + one entry here."""

from __future__ import annotations

from collections.abc import Callable

import torch

from worker.engine.errors import UnsupportedError
from worker.engine.pruning import channel, magnitude, nm
from worker.engine.pruning import random as random_method
from worker.engine.pruning.base import MaskRequest
from worker.engine.pruning.calibrated import compute as calibrated_compute

MaskMethod = Callable[[MaskRequest], dict[str, torch.Tensor]]

METHODS: dict[str, MaskMethod] = {
    "magnitude": magnitude.compute,
    "random": random_method.compute,
    "channel": channel.compute,
    "nm": nm.compute,
    "wanda": calibrated_compute,  # masks from the calibrated pass (worker/engine/strategies/calibrated.py)
    "sparsegpt": calibrated_compute,
}


def get_method(name: str) -> MaskMethod:
    """The mask method registered under ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise UnsupportedError(f"unknown mask pruning method {name!r}; known: {sorted(METHODS)}") from None
