"""`LoadedModel`: the module we run, prune and fine-tune, plus where it came from."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.export import ExportedProgram

from worker.engine.models.formats import ModelFormat
from worker.engine.models.huggingface import HuggingFaceSource

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    module: torch.nn.Module  # what we run, prune (by masking its parameters) and fine-tune
    format: ModelFormat
    architecture: str | None = None  # state_dict only, e.g. "torchvision/resnet18"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    # export only: the program the module came from. Its graph is reused when saving; the weights are taken
    # from `module` then (the program may share storage with `module`, so treat it as read-only).
    exported_program: ExportedProgram | None = None
    # False for export programs: ep.module() raises on .train()/.eval(), and the graph is fixed in the mode it was
    # exported in (batch norm, dropout). Gradients still flow through it, so it can be fine-tuned.
    supports_train_mode: bool = True
    source_container: str = ""  # "safetensors" | "torch.save zip" | "torch.save legacy" | "torchscript zip" | "pt2 zip"
    # export only: the batch size the program was exported with when its batch dimension is static. Other batch
    # sizes fail its guards ("Guard failed: x.size()[0] == 2"), so evaluation must feed batches of exactly this size.
    fixed_batch_size: int | None = None
    # huggingface only: the extracted input folder (tokenizer and processor files are carried over), task, archive.
    hf_source: HuggingFaceSource | None = None
    # causal_lm, sequence_classification, image_classification, feature_extraction; "auto" means classification.
    task: str = "auto"

    def set_train(self, on: bool) -> None:
        """Switch train/eval mode; a no-op for models that cannot switch (export programs)."""
        if self.supports_train_mode:
            self.module.train(on)

    def clone(self) -> LoadedModel:
        """An independent deep copy of the module (teacher, baseline); the exported program is shared."""
        # deepcopy works for eager modules, GraphModules (ep.module()) and ScriptModules (clones the C++ module).
        module = copy.deepcopy(self.module)
        return replace(self, module=module, arch_kwargs=copy.deepcopy(self.arch_kwargs))

    @property
    def is_scripted(self) -> bool:
        """True for TorchScript modules."""
        return isinstance(self.module, torch.jit.ScriptModule)
