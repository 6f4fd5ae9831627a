"""Optimizers and learning-rate schedules from the spec."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from prunekit.spec import FinetuneSpec


def build_optimizer(params: Iterable[tuple[str, torch.nn.Parameter]], spec: FinetuneSpec) -> torch.optim.Optimizer:
    """Weight decay (the L2 regularizer) applies to weight matrices and kernels only, not biases or norm scales."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _, p in params:
        if not p.requires_grad:
            continue
        (decay if p.dim() > 1 else no_decay).append(p)
    wd = spec.regularizers.l2
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    opt = spec.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum)
    if opt.name == "adam":
        return torch.optim.Adam(groups, lr=opt.lr, betas=opt.betas)
    return torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas)


def build_scheduler(optimizer: torch.optim.Optimizer, spec: FinetuneSpec) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch multiplier: linear warmup, then constant, cosine or step decay."""
    sched = spec.lr_schedule
    epochs = max(spec.epochs, 1)

    def factor(epoch: int) -> float:
        if sched.warmup_epochs and epoch < sched.warmup_epochs:
            return (epoch + 1) / (sched.warmup_epochs + 1)
        if sched.kind == "cosine":
            span = max(epochs - sched.warmup_epochs, 1)
            return 0.5 * (1 + math.cos(math.pi * (epoch - sched.warmup_epochs) / span))
        if sched.kind == "step":
            return float(sched.gamma ** (epoch // sched.step_size))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
