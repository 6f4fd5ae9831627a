"""What one running job carries between its stages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prunekit.spec import JobSpec
from worker.engine.data import Dataset
from worker.engine.progress import StageProgress


@dataclass
class JobState:
    spec: JobSpec
    model_path: Path
    out_dir: Path
    progress: StageProgress
    device: torch.device
    data: Dataset | None = None
    sample: torch.Tensor | None = None  # the first input of `inputs` (all a single-input model takes)
    inputs: dict[str, torch.Tensor] | None = None  # one sample ([1, ...]) of every model input, by name
    notes: list[str] = field(default_factory=list)
    task: str = "classification"  # worker.engine.tasks.EvalTask: how outputs are read and what is measured
    teacher: torch.nn.Module | None = None  # the unpruned model, for distillation computed batch by batch
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, message: str = "") -> Iterator[None]:
        self.progress.update(name, 0.0, message or name)
        started = time.perf_counter()
        yield
        self.stage_seconds[name] = round(time.perf_counter() - started, 4)
        self.progress.update(name, 1.0, f"{name} done")
