"""Spec of the calibrated methods (issue 13): N:M derives the sparsity, one-shot only, calibration rows."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prunekit.spec import JobSpec, SparseGPTPruning, WandaPruning


def test_n_of_m_pattern_derives_the_sparsity() -> None:
    cfg = JobSpec.model_validate({"pruning": {"method": "sparsegpt", "pattern": "n:m", "n": 1, "m": 4}}).pruning
    assert isinstance(cfg, SparseGPTPruning) and cfg.sparsity == 0.75
    assert (cfg.blocksize, cfg.percdamp, cfg.strict) == (128, 0.01, False)
    assert JobSpec().data.calibration_samples == 128


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"pruning": {"method": "wanda", "schedule": {"kind": "gradual"}}}, "schedule.kind must be 'oneshot'"),
        ({"pruning": {"method": "wanda", "pattern": "n:m", "overrides": {"h.0.*": 0.3}}}, "can only be 0.0"),
        ({"pruning": {"method": "sparsegpt"}, "finetune": {"regularize_epochs": 1}}, "regularize_epochs must be 0"),
        ({"pruning": {"method": "wanda", "pattern": "n:m", "n": 4, "m": 4}}, "n must be smaller than m"),
        ({"pruning": {"method": "wanda"}, "data": {"calibration_samples": 0}}, "greater than or equal to 1"),
    ],
)
def test_what_a_calibrated_method_cannot_do_is_refused_up_front(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate(spec)


def test_dense_overrides_are_allowed_with_n_of_m() -> None:
    cfg = WandaPruning(pattern="n:m", overrides={"lm_head": 0.0, "h.*": 0.5})
    assert cfg.overrides == {"lm_head": 0.0, "h.*": 0.5}
