"""What a model returned, as a flat list of tensors (models may return a tensor, tuples, lists or dicts)."""

from __future__ import annotations

from typing import Any

import torch


def output_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output, depth-first, in a stable order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in output_tensors(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in output_tensors(v)]
    return []
