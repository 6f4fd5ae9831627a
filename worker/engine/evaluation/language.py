"""Causal language models: next-token targets, token-weighted loss and perplexity, pooled features."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from prunekit.spec.report import SplitMetrics
from worker.engine.datasets.rows import Rows, row_batches
from worker.engine.models.calling import as_row_inputs, caller, inputs_to, main_output, num_rows

__all__ = ["lm_split_metrics", "lm_targets", "pooled_features"]


def lm_targets(logits: torch.Tensor, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [n, vocab], next tokens [n]) of every position whose next token is real (attention_mask 1)."""
    ids = next(iter(inputs.values()))
    flat_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    targets = ids[:, 1:].reshape(-1)
    mask = inputs.get("attention_mask")
    if mask is None:
        return flat_logits, targets
    keep = mask[:, 1:].reshape(-1).bool()
    return flat_logits[keep], targets[keep]


@torch.inference_mode()
def lm_split_metrics(
    module: torch.nn.Module, x: Rows | Mapping[str, Rows], batch_size: int, device: torch.device
) -> SplitMetrics:
    """Token-weighted mean next-token cross-entropy and its exp (perplexity), over every block of x."""
    inputs = as_row_inputs(x)
    call = caller(module, list(inputs))
    total, tokens = 0.0, 0
    n = num_rows(inputs)
    for rows_of in row_batches(inputs, [slice(start, start + batch_size) for start in range(0, n, batch_size)]):
        batch = inputs_to(rows_of, device)
        logits, targets = lm_targets(main_output(call(batch)), batch)
        total += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
        tokens += int(targets.numel())
    loss = total / tokens if tokens else None
    perplexity = math.exp(loss) if loss is not None and loss < 700 else (math.inf if loss is not None else None)
    return SplitMetrics(loss=loss, perplexity=perplexity, tokens=tokens, samples=num_rows(inputs))


def pooled_features(output: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """[batch, features]: token outputs [batch, tokens, features] mean-pooled over real tokens; 2-D stays as is."""
    if output.dim() <= 2:
        return output.reshape(len(output), -1)
    if output.dim() > 3:
        return output.reshape(len(output), -1)
    if attention_mask is None:
        return output.mean(dim=1)
    weights = attention_mask.to(output.dtype).unsqueeze(-1)
    return (output * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
