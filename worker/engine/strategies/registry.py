"""Pruning strategies by the spec's ``pruning.method``: every mask method shares one, ``structural`` has its own.

A new mask method registers in ``worker/engine/pruning/registry.py`` and is picked up here; a new strategy of
another kind is one module implementing ``PruningStrategy`` plus one entry in ``STRATEGIES``.
"""

from __future__ import annotations

from collections.abc import Callable

from prunekit.spec import PruningSpec
from worker.engine.errors import UnsupportedError
from worker.engine.pruning.registry import METHODS
from worker.engine.strategies.base import PruningStrategy
from worker.engine.strategies.calibrated import CalibratedStrategy
from worker.engine.strategies.mask import MaskStrategy
from worker.engine.strategies.structural import StructuralStrategy
from worker.engine.strategies.transformer import TransformerStructuralStrategy

StrategyFactory = Callable[[PruningSpec], PruningStrategy]

STRATEGIES: dict[str, StrategyFactory] = {
    **dict.fromkeys(METHODS, MaskStrategy.for_spec),
    **dict.fromkeys(("wanda", "sparsegpt"), CalibratedStrategy.for_spec),  # masks from calibration data
    "structural": StructuralStrategy.for_spec,
    "transformer_structural": TransformerStructuralStrategy.for_spec,  # Hugging Face checkpoints, config rewritten
}


def strategy_for(cfg: PruningSpec) -> PruningStrategy:
    """A fresh strategy for one job's pruning config, looked up by ``cfg.method``."""
    try:
        factory = STRATEGIES[cfg.method]
    except KeyError:
        raise UnsupportedError(f"unknown pruning method {cfg.method!r}; known: {sorted(STRATEGIES)}") from None
    return factory(cfg)
