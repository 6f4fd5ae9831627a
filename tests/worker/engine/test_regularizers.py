"""Regularizers: values match their definitions, and unlabelled data trains by distillation."""

from __future__ import annotations

import pytest
import torch

from prunekit.spec import DistillationSpec, RegularizersSpec
from worker.engine.training.regularizers import RegularizedLoss, distillation_loss, group_lasso_penalty, l1_penalty


def test_l1_and_group_lasso_values() -> None:
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert l1_penalty([w]).item() == pytest.approx(7.0)
    assert group_lasso_penalty([w]).item() == pytest.approx(5.0 * 2**0.5)


def test_distillation_is_zero_for_identical_logits() -> None:
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    # float32 softmax vs log_softmax round differently; T^2 = 16 scales that to ~1e-6
    assert distillation_loss(logits, logits, DistillationSpec()).item() == pytest.approx(0.0, abs=1e-4)
    assert distillation_loss(logits, -logits, DistillationSpec()).item() > 0.1


def test_terms_combine() -> None:
    w = torch.ones(2, 2, requires_grad=True)
    loss = RegularizedLoss(RegularizersSpec(l1=0.1, group_lasso=0.01), [w], [], labelled=True)
    logits, target = torch.zeros(3, 4), torch.tensor([0, 1, 2])
    value = loss(logits, target, None)
    assert set(loss.terms) == {"task", "l1", "group_lasso"}
    assert value.item() == pytest.approx(sum(loss.terms.values()))
    assert loss.terms["l1"] == pytest.approx(0.4)


def test_unlabelled_uses_distillation_only() -> None:
    loss = RegularizedLoss(RegularizersSpec(), [], [], labelled=False)
    assert loss.needs_teacher and loss.distill is not None and loss.distill.alpha == 1.0
    loss(torch.randn(3, 4), None, torch.randn(3, 4))
    assert set(loss.terms) == {"distill"}
