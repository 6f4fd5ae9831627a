"""Cubic gradual schedule (Zhu & Gupta 2017)."""

from __future__ import annotations

import itertools

import pytest

from worker.engine.pruning import cubic_sparsity, is_update_step


def test_endpoints_and_clamping() -> None:
    assert cubic_sparsity(0, 10, 110, 0.1, 0.9) == 0.1
    assert cubic_sparsity(10, 10, 110, 0.1, 0.9) == 0.1
    assert cubic_sparsity(110, 10, 110, 0.1, 0.9) == 0.9
    assert cubic_sparsity(10_000, 10, 110, 0.1, 0.9) == 0.9


def test_formula_and_front_loading() -> None:
    # halfway: s_f + (s_i - s_f) * 0.5^3
    assert cubic_sparsity(60, 10, 110, 0.0, 0.8) == pytest.approx(0.8 - 0.8 / 8)
    # pruning is fast early, slow late
    assert cubic_sparsity(20, 0, 100, 0.0, 1.0) - cubic_sparsity(0, 0, 100, 0.0, 1.0) > 0.4
    assert cubic_sparsity(100, 0, 100, 0.0, 1.0) - cubic_sparsity(80, 0, 100, 0.0, 1.0) < 0.01


def test_monotone_non_decreasing() -> None:
    values = [cubic_sparsity(t, 5, 95, 0.05, 0.95) for t in range(0, 120)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert len(set(values)) > 80


def test_update_steps() -> None:
    steps = [t for t in range(0, 40) if is_update_step(t, 5, 27, 10)]
    assert steps == [5, 15, 25, 27]
