"""Accuracy, loss and fidelity of a model on tensors of data."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from prunekit.spec.report import Fidelity, SplitMetrics


@torch.inference_mode()
def predict_logits(
    module: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device, fixed_batch: int | None = None
) -> torch.Tensor:
    """Logits for every row of x, computed in batches, returned on CPU as float32.

    `fixed_batch`: programs exported with a static batch size only accept that size; the last batch is
    zero-padded to it and the padding's outputs dropped.
    """
    step = fixed_batch or batch_size
    outs = []
    for start in range(0, len(x), step):
        batch = x[start : start + step]
        real = len(batch)
        if fixed_batch and real < fixed_batch:
            batch = torch.cat([batch, batch.new_zeros((fixed_batch - real, *batch.shape[1:]))])
        out = module(batch.to(device, non_blocking=True))
        outs.append(_as_logits(out).float().cpu()[:real])
    return torch.cat(outs) if outs else torch.empty(0)


def _as_logits(out: object) -> torch.Tensor:
    # Some exported programs return a 1-tuple; classification models return one tensor.
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"expected class logits of shape [batch, classes], got {shape}")
    return out


def split_metrics(logits: torch.Tensor, y: torch.Tensor | None) -> SplitMetrics:
    """Top-1 accuracy and mean cross-entropy; both None without labels."""
    if y is None or len(y) == 0:
        return SplitMetrics(samples=len(logits))
    acc = int((logits.argmax(dim=1) == y).sum()) / len(y)  # exact count ratio, not a float32 mean
    loss = F.cross_entropy(logits, y).item()
    return SplitMetrics(accuracy=acc, loss=loss, samples=len(y))


def fidelity(original: torch.Tensor, compressed: torch.Tensor, split: str) -> Fidelity:
    """Top-1 agreement and mean KL(original || compressed) between two models' logits on the same inputs."""
    agree = int((original.argmax(1) == compressed.argmax(1)).sum()) / len(original)
    kl = F.kl_div(F.log_softmax(compressed, 1), F.log_softmax(original, 1), reduction="batchmean", log_target=True)
    return Fidelity(split=split, top1_agreement=agree, kl_divergence=max(kl.item(), 0.0), samples=len(original))


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA (no loss scaling needed); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
