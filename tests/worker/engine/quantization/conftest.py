"""A Linear-only digits model saved as a state-dict, and a helper that runs a quantized compress job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from worker.engine.api import JobInputs, run_job
from worker.engine.models.builtin import DigitsMLP

MLP_KWARGS = {"width": 512}


@pytest.fixture(scope="session")
def mlp_model(digits_dir: Path) -> Path:
    torch.manual_seed(0)
    path = digits_dir / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in DigitsMLP(**MLP_KWARGS).state_dict().items()}, str(path))
    return path


def quantized_job(model: Path, data: Path, out: Path, arch: str, method: str, **extra: Any) -> Report:
    """Magnitude 50%, two fine-tuning epochs, then `method`; returns the report."""
    spec = {
        "model": {"architecture": f"prunekit/{arch}", "kwargs": MLP_KWARGS if arch == "digits_mlp" else {}},
        "pruning": {"method": "magnitude", "sparsity": 0.5},
        "finetune": {"epochs": 2, "batch_size": 64},
        "evaluation": {"latency": {"repeats": 5, "warmup": 1}},
        "quantization": {"method": method},
        **extra,
    }
    return run_job(JobInputs(model, JobSpec.model_validate(spec), data), out, isolate=False).report
