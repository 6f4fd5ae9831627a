"""The spec: defined once, importable without torch, errors carry field paths."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prunekit.spec import JobSpec, NMPruning, SpecError, parse_spec
from prunekit.spec.loading import parse_spec_text


def test_spec_imports_without_torch() -> None:
    code = "import sys, prunekit.spec; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_outside_unit_interval(sparsity: float) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"pruning": {"method": "magnitude", "sparsity": sparsity}})
    assert info.value.errors[0]["loc"] == "pruning.sparsity"


def test_unknown_field_is_rejected_with_path() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"finetune": {"epochs": 2, "optimiser": {}}})
    assert info.value.errors[0]["loc"] == "finetune.optimiser"


def test_state_dict_needs_architecture() -> None:
    with pytest.raises(SpecError, match="architecture is required"):
        parse_spec({"model": {"format": "state_dict"}})


def test_nm_derives_sparsity() -> None:
    spec = JobSpec.model_validate({"pruning": {"method": "nm", "n": 2, "m": 4}})
    assert isinstance(spec.pruning, NMPruning) and spec.pruning.sparsity == 0.5


def test_yaml_errors() -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec_text("pruning: [unclosed")
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_spec_text("- a\n- b\n")


def test_kind_needs_section() -> None:
    with pytest.raises(SpecError, match="needs a 'sweep' section"):
        parse_spec({"kind": "sweep"})
