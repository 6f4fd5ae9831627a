"""What every quantization method takes and returns: the fine-tuned model in, a reloaded artifact out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from prunekit.spec.quantization import QuantizationSpec
from worker.engine.job_state import JobState
from worker.engine.models.handle import LoadedModel


@dataclass
class QuantizeRequest:
    """The fine-tuned model in memory, and how its float artifact was written."""

    state: JobState
    model: LoadedModel  # the fine-tuned model (eager where the input was); never changed in place
    out_fmt: str  # the float artifact's format
    spec: QuantizationSpec


@dataclass
class Quantized:
    """The delivered artifact, reloaded the way a user loads it, ready to be measured."""

    path: Path
    model: LoadedModel  # what measurement calls: the artifact as loaded (wrapped only to cast or feed inputs)
    device: torch.device  # where it runs: int8 kernels of PyTorch run on the CPU
    runtime: str  # the latency row's engine: 'torchscript', 'eager', 'onnxruntime', ...
    load: str  # how to load it with plain torch / onnxruntime
    calibration_rows: int | None = None
    notes: list[str] = field(default_factory=list)
