"""Validation metrics of the 'pruned' stage: the model at its final sparsity or widths, before any recovery."""

from __future__ import annotations

import torch

from prunekit.spec import MaskPruningSpec
from prunekit.spec.report import SplitMetrics
from worker.engine.evaluation.language import lm_split_metrics
from worker.engine.evaluation.metrics import predict_logits, split_metrics
from worker.engine.job_state import JobState
from worker.engine.models.handle import LoadedModel
from worker.engine.pruning import PruneTarget, compute_masks
from worker.engine.tasks import EvalTask


def val_split(state: JobState, model: LoadedModel) -> SplitMetrics | None:
    """One validation pass: loss/perplexity (causal LMs) or accuracy; None without labelled data."""
    data, bs = state.data, state.spec.evaluation.batch_size
    if data is None:
        return None
    if state.task == EvalTask.CAUSAL_LM:
        return lm_split_metrics(model.module, data.val_inputs(), bs, state.device)
    if data.y_val is None:
        return None
    model.set_train(False)
    logits = predict_logits(model.module, data.val_inputs(), bs, state.device, model.fixed_batch_size)
    return split_metrics(logits, data.y_val)


def oneshot_val(
    state: JobState, model: LoadedModel, targets: list[PruneTarget], cfg: MaskPruningSpec
) -> SplitMetrics | None:
    """Validation metrics with the final masks applied once, as fine-tuning starts from them; weights restored after."""
    if state.data is None or not targets:
        return None
    saved = [t.param.detach().clone() for t in targets]
    try:
        generator = torch.Generator().manual_seed(state.spec.seed)  # the fine-tuning masks' own seed
        compute_masks(targets, cfg, level=cfg.sparsity, generator=generator).apply(model.module)
        return val_split(state, model)
    finally:
        with torch.no_grad():
            for target, value in zip(targets, saved, strict=True):
                target.param.copy_(value)
