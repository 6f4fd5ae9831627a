"""What the job ran on: versions, device, threads."""

from __future__ import annotations

import platform

import torch

import prunekit
from prunekit.spec.report import Environment


def resolve_device(requested: str) -> torch.device:
    """'auto' takes CUDA when present, else CPU; an explicit 'cuda' without a GPU falls back to CPU loudly."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def describe_environment(device: torch.device, mixed_precision: bool) -> Environment:
    try:
        import torchvision

        tv: str | None = torchvision.__version__
    except ImportError:
        tv = None
    return Environment(
        prunekit=prunekit.__version__,
        torch=torch.__version__,
        torchvision=tv,
        python=platform.python_version(),
        platform=platform.platform(),
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or None,
        mixed_precision=mixed_precision,
        threads=torch.get_num_threads(),
    )
