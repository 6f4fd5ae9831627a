"""N:M on transformers' Conv1D (GPT-2 stores weights [in, out]): groups run along each output's inputs."""

from __future__ import annotations

import torch
import transformers

from prunekit.spec.pruning import NMPruning
from worker.engine.pruning.nm import nm_mask, reduction_size
from worker.engine.pruning.targets import plan_targets


def _gpt2() -> transformers.GPT2LMHeadModel:
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_conv1d_weights_are_grouped_along_their_inputs() -> None:
    model = _gpt2()
    plan = plan_targets(model, NMPruning(n=2, m=4), {"input_ids": torch.zeros(1, 8, dtype=torch.long)})
    target = next(t for t in plan.targets if t.name == "transformer.h.0.mlp.c_fc.weight")
    assert target.inputs_first and target.param.shape == (32, 128)  # [in, out]
    assert reduction_size(target) == 32
    keep = nm_mask(target, 2, 4)
    per_output = keep.t().reshape(128, 32 // 4, 4)  # each output's inputs, in groups of 4
    assert bool((per_output.sum(-1) == 2).all())
    # The groups hold the 2 largest |w| of each output's consecutive inputs, as the kernels expect.
    weights = target.param.detach().t().abs().reshape(128, 8, 4)
    kept_min = torch.where(per_output, weights, torch.full((), float("inf"))).amin(-1)
    dropped_max = torch.where(per_output, torch.full((), -1.0), weights).amax(-1)
    assert bool((kept_min >= dropped_max).all())


def test_linear_weights_are_unchanged() -> None:
    layers = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))
    plan = plan_targets(layers, NMPruning(n=2, m=4), torch.zeros(1, 8))
    target = next(t for t in plan.targets if t.name == "0.weight")
    assert not target.inputs_first and reduction_size(target) == 8
    assert bool((nm_mask(target, 2, 4).reshape(12, 2, 4).sum(-1) == 2).all())
