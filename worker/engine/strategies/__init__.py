"""Pruning strategies of a compress job (mask methods, structural removal) behind one interface."""

from worker.engine.strategies.base import PruneOutcome, PruningStrategy, default_output_format
from worker.engine.strategies.registry import STRATEGIES, strategy_for

__all__ = ["STRATEGIES", "PruneOutcome", "PruningStrategy", "default_output_format", "strategy_for"]
