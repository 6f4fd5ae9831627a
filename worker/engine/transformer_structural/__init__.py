"""Structural pruning of Hugging Face transformers: heads, MLP channels, hidden size and blocks, uniform widths.

``legality.plan_widths`` is the pre-flight check (config only); ``importance`` scores and selects;
``surgery.apply_selection`` removes in place and rewrites the config; ``budget`` searches target_params /
target_speedup. The job strategy is ``worker/engine/strategies/transformer.py``.
"""

from worker.engine.transformer_structural.budget import BudgetChoice, choose_widths, params_of
from worker.engine.transformer_structural.families import family_of, widths_of
from worker.engine.transformer_structural.importance import Scores, activation_scores, magnitude_scores, select
from worker.engine.transformer_structural.legality import head_options, legal_head_ratios, plan_widths
from worker.engine.transformer_structural.surgery import Selection, apply_selection, hidden_layers_outside_blocks

__all__ = [
    "BudgetChoice", "Scores", "Selection", "activation_scores", "apply_selection", "choose_widths", "family_of",
    "head_options", "hidden_layers_outside_blocks", "legal_head_ratios", "magnitude_scores", "params_of",
    "plan_widths", "select", "widths_of",
]  # fmt: skip
