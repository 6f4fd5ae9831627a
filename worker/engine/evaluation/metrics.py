"""Accuracy, loss and fidelity of a model on tensors of data."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from prunekit.spec.report import Fidelity, SplitMetrics
from worker.engine.datasets.rows import Rows, row_batches
from worker.engine.evaluation.language import pooled_features
from worker.engine.models.calling import as_row_inputs, caller, inputs_to, main_output, num_rows, pad_rows

Readout = Callable[[object, Mapping[str, torch.Tensor]], torch.Tensor]  # (model output, batch) -> [rows, ...]


@torch.inference_mode()
def _predict(
    module: torch.nn.Module,
    x: Rows | Mapping[str, Rows],
    batch_size: int,
    device: torch.device,
    fixed_batch: int | None,
    readout: Readout,
) -> torch.Tensor:
    """`readout` of every row of x, computed in batches, on CPU as float32.

    `fixed_batch`: programs exported with a static batch size only accept that size; the last batch is
    padded to it and the padding's outputs dropped.
    """
    inputs = as_row_inputs(x)
    call = caller(module, list(inputs))
    step = fixed_batch or batch_size
    outs = []
    for batch in row_batches(inputs, eval_slices(num_rows(inputs), step)):
        real = num_rows(batch)
        if fixed_batch and real < fixed_batch:
            batch = pad_rows(batch, fixed_batch)
        outs.append(readout(call(inputs_to(batch, device)), batch).float().cpu()[:real])
    return torch.cat(outs) if outs else torch.empty(0)


def predict_logits(
    module: torch.nn.Module,
    x: Rows | Mapping[str, Rows],
    batch_size: int,
    device: torch.device,
    fixed_batch: int | None = None,
) -> torch.Tensor:
    """Class logits [rows, classes] of every row of x (one tensor, or named inputs), as float32 on CPU."""
    return _predict(module, x, batch_size, device, fixed_batch, lambda out, _: _as_logits(out))


def predict_features(
    module: torch.nn.Module,
    x: Rows | Mapping[str, Rows],
    batch_size: int,
    device: torch.device,
    fixed_batch: int | None = None,
) -> torch.Tensor:
    """The main output of every row, mean-pooled over real tokens to [rows, features], on CPU as float32."""

    def pooled(out: object, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return pooled_features(main_output(out).float().cpu(), batch.get("attention_mask"))  # the mask is on CPU

    return _predict(module, x, batch_size, device, fixed_batch, pooled)


def eval_slices(n: int, step: int) -> list[slice]:
    """Consecutive batches of `step` rows (the last one shorter) covering n rows in order."""
    return [slice(start, start + step) for start in range(0, n, step)]


def feature_fidelity(original: torch.Tensor, compressed: torch.Tensor, split: str) -> Fidelity:
    """Mean cosine similarity and relative error ||after - before|| / ||before|| of two models' pooled outputs."""
    cosine = F.cosine_similarity(original, compressed, dim=1, eps=1e-12).mean().item()
    relative = torch.linalg.vector_norm(compressed - original) / torch.linalg.vector_norm(original).clamp(min=1e-12)
    return Fidelity(split=split, cosine_similarity=cosine, relative_error=relative.item(), samples=len(original))


def _as_logits(out: object) -> torch.Tensor:
    # Tuples, dicts and Hugging Face outputs: `logits` or the first tensor; classification models return [batch, C].
    logits = main_output(out)
    if logits.dim() != 2:
        raise ValueError(f"expected class logits of shape [batch, classes], got {tuple(logits.shape)}")
    return logits


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
