"""The structural branch of a compress job: remove channels physically, then recover by fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from prunekit.spec import StructuralPruning
from worker.engine.data import Dataset
from worker.engine.evaluation.latency import measure_latency
from worker.engine.models.handle import LoadedModel
from worker.engine.structural import prune_structurally
from worker.engine.training.finetune import FinetuneResult, TrainContext, finetune
from worker.engine.training.masking import NoMasks
from worker.engine.training.regularizers import RegularizedLoss

TAYLOR_BATCHES = 8


def gradient_fn(data: Dataset, batch_size: int, device: torch.device) -> Any:
    """Forward+backward over a few labelled batches, for gradient-based importance (first-order Taylor)."""

    def run(module: torch.nn.Module) -> None:
        x, y = data.x_train, data.y_train
        if y is None:
            return
        for start in range(0, min(len(x), TAYLOR_BATCHES * batch_size), batch_size):
            out = module(x[start : start + batch_size].to(device))
            torch.nn.functional.cross_entropy(out, y[start : start + batch_size].to(device)).backward()

    return run


def latency_fn(sample: torch.Tensor, spec: Any, device: torch.device) -> Any:
    """Median latency in seconds, measured the way the report measures it (for latency budgets)."""

    def run(module: torch.nn.Module) -> float:
        return measure_latency(module, sample.to(device), spec, device).median_ms / 1000.0

    return run


def prune_and_recover(
    model: LoadedModel,
    cfg: StructuralPruning,
    sample: torch.Tensor,
    data: Dataset | None,
    ctx_args: dict[str, Any],
    on_epoch: Any,
) -> tuple[FinetuneResult, dict[str, Any]]:
    """Replace model.module by its structurally pruned copy, then fine-tune it for ctx_args['spec'].epochs."""
    device: torch.device = ctx_args["device"]
    ft = ctx_args["spec"]
    data_fn = gradient_fn(data, ft.batch_size, device) if data is not None and data.labelled else None
    result = prune_structurally(
        model.module, cfg, sample.to(device), data_fn, latency_fn(sample, ctx_args["latency"], device)
    )
    model.module = result.module.to(device)
    info = result.to_dict()
    if data is None or ft.epochs == 0:
        return FinetuneResult(), info
    loss = RegularizedLoss(ft.regularizers, [], [], data.labelled)
    ctx = TrainContext(
        model=model,
        data=data,
        masks=NoMasks(),
        loss=loss,
        teacher_train_logits=ctx_args["teacher_train_logits"] if loss.needs_teacher else None,
        teacher_val_logits=ctx_args["teacher_val_logits"] if loss.needs_teacher else None,
        device=device,
        amp=device.type == "cuda",
        seed=ctx_args["seed"],
        eval_batch_size=ctx_args["eval_batch_size"],
    )
    return finetune(ctx, ft, on_epoch), info


def write_state_dict_sidecar(model: LoadedModel, out_dir: Path, widths: dict[str, Any]) -> list[str]:
    """A state-dict plus the new layer widths, from which the registered architecture can be rebuilt."""
    if model.architecture is None:
        return []
    weights = out_dir / "model.state.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}, str(weights))
    meta = out_dir / "model.widths.json"
    meta.write_text(
        json.dumps({"architecture": model.architecture, "kwargs": model.arch_kwargs, "widths": widths}, indent=2)
    )
    return [weights.name, meta.name]
