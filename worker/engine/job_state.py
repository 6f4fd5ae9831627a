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
from worker.engine.errors import ResourceLimitError
from worker.engine.models.offload import Offload, device_budget, offload_blockers, place, stream_blocks
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
    offload: Offload | None = None  # set when the model did not fit the device: its blocks are streamed
    placed: bool = False  # the job's model was placed: later models (reloaded artifact, baseline) follow its way

    def place(self, module: torch.nn.Module) -> None:
        """Put a model of this job on its device: whole, or with its blocks streamed (models.offload) when the job's
        model does not fit; a spec that needs the whole model on the device is refused then, before any work."""
        if self.offload is not None:
            stream_blocks(module, self.device, self.offload.budget)
            return
        if self.placed:  # decided once, on the upload: the free memory that is left now would not be a fair test
            module.to(self.device)
            return
        self.placed = True
        self.offload = place(module, self.device, device_budget(self.spec, self.device))
        if self.offload is None:
            return
        blockers = offload_blockers(self.spec)
        if blockers:
            raise ResourceLimitError(
                f"{self.offload.note(self.device)}. That runs forward passes only, and this job asks for "
                f"{'; '.join(blockers)}: use a device with more memory, or drop those"
            )
        self.notes.append(self.offload.note(self.device))

    @contextmanager
    def stage(self, name: str, message: str = "") -> Iterator[None]:
        self.progress.update(name, 0.0, message or name)
        started = time.perf_counter()
        yield
        self.stage_seconds[name] = round(time.perf_counter() - started, 4)
        self.progress.update(name, 1.0, f"{name} done")
