"""The fine-tuning loop: regularized loss, masks enforced after every step, early stopping."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from prunekit.spec import FinetuneSpec
from prunekit.spec.report import EpochRecord
from worker.engine.data import Dataset
from worker.engine.datasets.rows import row_batches
from worker.engine.errors import InvalidSpecError, UnsupportedError
from worker.engine.evaluation.language import lm_split_metrics, lm_targets, pooled_features
from worker.engine.evaluation.metrics import autocast_context, predict_features, predict_logits, split_metrics
from worker.engine.models.calling import caller, inputs_to, main_output
from worker.engine.models.handle import LoadedModel
from worker.engine.training.divergence import ADVICE, DivergenceGuard
from worker.engine.training.hidden_match import HiddenMatch
from worker.engine.training.masking import MaskController, NoMasks
from worker.engine.training.optim import build_optimizer, build_scheduler
from worker.engine.training.regularizers import RegularizedLoss, distillation_loss

EpochCallback = Callable[[EpochRecord, float], None]  # (record, fraction of fine-tuning done)


@dataclass
class FinetuneResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainContext:
    """Everything the loop needs besides the spec; built by the pipeline."""

    model: LoadedModel
    data: Dataset
    masks: MaskController | NoMasks
    loss: RegularizedLoss
    teacher_train_logits: torch.Tensor | None
    teacher_val_logits: torch.Tensor | None
    device: torch.device
    amp: bool
    seed: int
    eval_batch_size: int
    fixed_batch: int | None = None  # exported programs with a static batch size
    # causal LMs: the unpruned model, run on each batch for distillation (its logits are too large to keep)
    teacher_module: torch.nn.Module | None = None
    # structural recovery: block outputs matched against the original's (needs teacher_module)
    hidden: HiddenMatch | None = None


def _batches(n: int, batch_size: int, generator: torch.Generator, full_only: bool) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=generator)
    batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) == batch_size] if full_only else batches


def _train_epoch(
    ctx: TrainContext,
    spec: FinetuneSpec,
    optimizer: torch.optim.Optimizer,
    step: int,
    gen: torch.Generator,
    guard: DivergenceGuard,
) -> tuple[int, float, float | None]:
    module, data = ctx.model.module, ctx.data
    inputs = data.train_inputs()
    call = caller(module, list(inputs))
    ctx.model.set_train(True)
    total_loss, correct, seen = 0.0, 0, 0
    batches = _batches(len(data.x_train), spec.batch_size, gen, ctx.fixed_batch is not None)
    for idx, rows_of in zip(batches, row_batches(inputs, batches), strict=True):
        x = inputs_to(rows_of, ctx.device)
        y = data.y_train[idx].to(ctx.device) if data.y_train is not None else None
        t_logits = ctx.teacher_train_logits[idx].to(ctx.device) if ctx.teacher_train_logits is not None else None
        with autocast_context(ctx.device, ctx.amp):
            logits = main_output(call(x))
        if data.causal_lm:
            logits, y, t_logits = _lm_batch(ctx, call, logits, x)
        elif data.features:
            logits = pooled_features(logits, x.get("attention_mask"))  # compared with the original's, by MSE
        loss = ctx.loss(logits, y, t_logits)
        if ctx.hidden is not None and ctx.teacher_module is not None:
            # A causal LM's teacher ran in _lm_batch; other tasks' teacher logits were computed up front.
            loss = loss + ctx.hidden.loss(ctx.teacher_module, x, teacher_ran=data.causal_lm and t_logits is not None)
        loss_value = float(loss.detach())
        guard.check(loss_value, int(logits.shape[-1]), step + 1)
        optimizer.zero_grad(set_to_none=True)
        _backward(loss)
        if spec.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), spec.max_grad_norm)
        optimizer.step()
        step += 1
        ctx.masks.after_step(step)
        total_loss += loss_value * len(idx)
        seen += len(idx)
        if data.y_train is not None and y is not None:
            correct += int((logits.detach().argmax(1) == y).sum())
    ctx.model.set_train(False)
    acc = correct / seen if data.y_train is not None and seen else None
    return step, total_loss / max(seen, 1), acc


def _lm_batch(
    ctx: TrainContext, call: Callable[..., object], logits: torch.Tensor, x: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Next-token (logits, targets) of a causal-LM batch, and the original's logits when distilling."""
    flat, targets = lm_targets(logits, x)
    if ctx.teacher_module is None or not ctx.loss.needs_teacher:
        return flat, targets, None
    teacher_call = caller(ctx.teacher_module, list(x))
    with torch.no_grad(), autocast_context(ctx.device, ctx.amp):
        teacher_flat, _ = lm_targets(main_output(teacher_call(x)), x)
    return flat, targets, teacher_flat


def _backward(loss: torch.Tensor) -> None:
    """loss.backward(); a model recorded with inference-only kernels cannot be fine-tuned: say why and what to do."""
    try:
        loss.backward()
    except RuntimeError as exc:
        found = re.search(r"derivative for (\S+) is not implemented", str(exc))
        if found is None:
            raise
        raise UnsupportedError(
            f"cannot fine-tune this model: it runs {found.group(1)}, an inference-only kernel (recorded when the model "
            "was traced or exported under torch.no_grad); save it with gradients enabled, or set finetune.epochs "
            "to 0 to prune without fine-tuning"
        ) from None


def _check_finite(module: torch.nn.Module, epoch: int) -> None:
    """Weights or statistics that overflowed make a model that cannot be delivered: stop with advice."""
    bad = [n for n, t in module.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise InvalidSpecError(f"fine-tuning diverged in epoch {epoch}: NaN or Inf in {', '.join(bad[:5])}; {ADVICE}")


def _validate(ctx: TrainContext) -> tuple[float | None, float | None]:
    """Validation (loss, accuracy); without labels the loss is the distillation KL to the original."""
    if ctx.data.causal_lm:
        return lm_split_metrics(ctx.model.module, ctx.data.val_inputs(), ctx.eval_batch_size, ctx.device).loss, None
    if ctx.data.features and ctx.teacher_val_logits is not None:
        module, inputs = ctx.model.module, ctx.data.val_inputs()
        features = predict_features(module, inputs, ctx.eval_batch_size, ctx.device, ctx.fixed_batch)
        return float(F.mse_loss(features, ctx.teacher_val_logits)), None
    logits = predict_logits(ctx.model.module, ctx.data.val_inputs(), ctx.eval_batch_size, ctx.device, ctx.fixed_batch)
    if ctx.data.y_val is not None:
        m = split_metrics(logits, ctx.data.y_val)
        return m.loss, m.accuracy
    if ctx.teacher_val_logits is not None and ctx.loss.distill is not None:
        return float(distillation_loss(logits, ctx.teacher_val_logits, ctx.loss.distill)), None
    return None, None


def _improved(value: float | None, best: float | None, higher_is_better: bool, min_delta: float) -> bool:
    if value is None or value != value:  # NaN never improves
        return False
    if best is None:
        return True
    return value > best + min_delta if higher_is_better else value < best - min_delta


def finetune(ctx: TrainContext, spec: FinetuneSpec, on_epoch: EpochCallback) -> FinetuneResult:
    """Train for spec.epochs under masks; returns per-epoch history. Masks are final when it returns."""
    result = FinetuneResult()
    gen = torch.Generator().manual_seed(ctx.seed)
    optimizer = build_optimizer(ctx.model.module.named_parameters(), spec)
    scheduler = build_scheduler(optimizer, spec)
    es = spec.early_stopping
    higher = es is not None and es.metric == "val_accuracy" and ctx.data.y_val is not None
    best_value: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stale, step = 0, 0
    guard = DivergenceGuard()
    ctx.masks.start()
    for epoch in range(1, spec.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        step, train_loss, train_acc = _train_epoch(ctx, spec, optimizer, step, gen, guard)
        _check_finite(ctx.model.module, epoch)
        scheduler.step()
        if epoch == spec.epochs:
            ctx.masks.finish()  # evaluate the last epoch at the final sparsity
        val_loss, val_acc = _validate(ctx)
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=val_loss,
            val_accuracy=val_acc,
            sparsity=ctx.masks.level,
            lr=lr,
            seconds=time.perf_counter() - started,
        )
        result.history.append(record)
        on_epoch(record, epoch / spec.epochs)
        if es is None or not ctx.masks.at_final:
            continue  # only models at the final sparsity may be kept as "best"
        value = val_acc if higher else val_loss
        if _improved(value, best_value, higher, es.min_delta):
            best_value, stale, result.best_epoch = value, 0, epoch
            if es.restore_best:
                best_state = copy.deepcopy(ctx.model.module.state_dict())
        else:
            stale += 1
            if stale >= es.patience:
                result.stopped_early = True
                result.notes.append(f"early stopping after epoch {epoch} (no {es.metric} gain for {es.patience})")
                break
    if best_state is not None and result.best_epoch != result.history[-1].epoch:
        ctx.model.module.load_state_dict(best_state)
        result.notes.append(f"restored the best epoch ({result.best_epoch}) by {es.metric if es else ''}")
    ctx.masks.finish()
    return result
