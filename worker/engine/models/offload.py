"""Running a model whose weights do not fit the device: its blocks stay in host memory, streamed in one at a time.

The largest list of blocks (a transformer's layers) stays in host memory; everything else (embeddings, final
norm, head) goes to the device; a pre-forward hook copies a block to the device and a post-forward hook sends it
back, so the device holds the rest of the model and one block. Forward passes only: evaluation and one-shot
pruning work, training does not (backward needs every block's weights on the device again), so a job that
offloads refuses fine-tuning before any work (``offload_blockers``).

The hooks are small objects that act on the module they are called with (no closure over a block), so a deep
copy of the model (the job's unpruned original) streams its own blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.spec import JobSpec
from worker.engine.errors import ResourceLimitError

__all__ = [
    "Offload", "device_budget", "offload_blockers", "place", "resident", "stream_blocks",
    "weight_bytes",
]  # fmt: skip

_PLACEMENT = "_prunekit_offload"  # attribute on each streamed block: its BlockPlacement
_FREE_SHARE = 0.9  # of the GPU's free memory; the rest is left for activations and calibration statistics
_COPIES = 2  # a compress job holds the model and its unpruned original (teacher, latency baseline)
_STREAMABLE_METHODS = ("magnitude", "random", "wanda", "sparsegpt")
GIB = 2**30


@dataclass
class BlockPlacement:
    """Where a streamed block computes and where it rests; ``pinned`` holds it on the device between calls."""

    device: torch.device
    home: torch.device
    pinned: bool = False


class _StreamIn:
    def __call__(self, module: nn.Module, _args: Any) -> None:
        module.to(getattr(module, _PLACEMENT).device)


class _StreamOut:
    def __call__(self, module: nn.Module, _args: Any, _out: Any) -> None:
        placement: BlockPlacement = getattr(module, _PLACEMENT)
        if not placement.pinned:
            module.to(placement.home)


@dataclass(frozen=True)
class Offload:
    """How a model was placed when it did not fit: which list streams, and the sizes that decided it."""

    path: str  # the streamed nn.ModuleList, e.g. "model.layers"
    blocks: int
    weights: int  # bytes of parameters and buffers, the whole model
    budget: int  # bytes the job may use on the device

    def note(self, device: torch.device) -> str:
        """The report's explanation of the placement."""
        where = "" if device.type != "cpu" else " (on the CPU this saves no memory: device_memory_gib was set)"
        return (
            f"the model's weights ({self.weights / GIB:.2f} GiB, twice that with the unpruned original the job "
            f"keeps) exceed the device memory allowed ({self.budget / GIB:.2f} GiB): its {self.blocks} blocks of "
            f"{self.path!r} stay in host memory and are copied to {device.type} one at a time for their forward"
            f"{where}; latencies include those copies"
        )


def weight_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (tied tensors once)."""
    seen: dict[int, int] = {}
    for t in [*module.parameters(), *module.buffers()]:
        seen[t.data_ptr() or id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def device_budget(spec: JobSpec, device: torch.device) -> int | None:
    """Device memory a job may fill (bytes): spec.device_memory_gib, else 90% of a GPU's free memory; None: no limit."""
    if spec.device_memory_gib is not None:
        return int(spec.device_memory_gib * GIB)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * _FREE_SHARE)
    return None


def _block_list(module: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The nn.ModuleList of 2+ entries holding the most weight bytes, if any."""
    lists = [(weight_bytes(m), name, m) for name, m in module.named_modules() if isinstance(m, nn.ModuleList)]
    lists = [entry for entry in lists if len(entry[2]) >= 2]
    if not lists:
        return None
    _bytes, name, found = max(lists, key=lambda entry: entry[0])
    return name, found


def _move_outside(module: nn.Module, skip: nn.Module, device: torch.device) -> None:
    """Move every parameter and buffer to `device` except those under `skip` (tied parameters move once)."""
    for child in module.children():
        if child is not skip:
            _move_outside(child, skip, device)
    for p in module.parameters(recurse=False):
        p.data = p.data.to(device)
    for name, b in list(module.named_buffers(recurse=False)):
        setattr(module, name, b.to(device))


def place(module: nn.Module, device: torch.device, budget: int | None) -> Offload | None:
    """Put the model on `device`: whole when it fits the budget twice over, else with its blocks streamed."""
    if budget is None or _COPIES * weight_bytes(module) <= budget:
        module.to(device)
        return None
    return stream_blocks(module, device, budget)


def stream_blocks(module: nn.Module, device: torch.device, budget: int) -> Offload:
    """Keep the model's largest list of blocks in host memory, each block copied to `device` for its forward."""
    weights = weight_bytes(module)
    found = _block_list(module)
    if found is None:
        raise ResourceLimitError(
            f"the model's weights ({weights / GIB:.2f} GiB) do not fit the device memory allowed "
            f"({budget / GIB:.2f} GiB), and it has no list of blocks prunekit could run one at a time"
        )
    path, blocks = found
    largest = max(weight_bytes(b) for b in blocks)
    resting = weights - weight_bytes(blocks)
    if _COPIES * resting + largest > budget:
        raise ResourceLimitError(
            f"the model does not fit the device memory allowed ({budget / GIB:.2f} GiB) even one block at a time: "
            f"its weights outside {path!r} take {resting / GIB:.2f} GiB (twice, with the unpruned original) and "
            f"its largest block {largest / GIB:.2f} GiB"
        )
    module.to("cpu")
    _move_outside(module, blocks, device)
    for block in blocks:
        setattr(block, _PLACEMENT, BlockPlacement(device, torch.device("cpu")))
        block.register_forward_pre_hook(_StreamIn())
        block.register_forward_hook(_StreamOut())
    return Offload(path, len(blocks), weights, budget)


@contextmanager
def resident(block: nn.Module) -> Iterator[None]:
    """Hold a streamed block on its device across many calls (calibrating it); a block not streamed is left as is."""
    placement = getattr(block, _PLACEMENT, None)
    if not isinstance(placement, BlockPlacement):
        yield
        return
    block.to(placement.device)
    placement.pinned = True
    try:
        yield
    finally:
        placement.pinned = False
        block.to(placement.home)


def offload_blockers(spec: JobSpec) -> list[str]:
    """What in the spec needs the whole model on the device (so cannot run with its blocks streamed)."""
    found = []
    if spec.kind not in ("compress", "dry_run"):
        found.append(f"kind {spec.kind!r} (only compress jobs stream blocks)")
    if spec.pruning.method not in _STREAMABLE_METHODS:
        found.append(f"pruning method {spec.pruning.method!r} (use one of {', '.join(_STREAMABLE_METHODS)})")
    if spec.finetune.epochs or spec.finetune.regularize_epochs:
        found.append("fine-tuning (set finetune.epochs and finetune.regularize_epochs to 0)")
    if spec.quantization is not None:
        found.append("quantization")
    if spec.output.also_onnx:
        found.append("output.also_onnx")
    return found
