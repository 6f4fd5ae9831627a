"""The calibrated pass: prune target layers in the order the model runs them, each from statistics of the inputs it
gets from the already pruned layers before it.

Models with a chain of blocks (transformer layers) are run one block at a time, so memory holds one block's
hidden states and one group's input statistics; inside a block, layers that take the same input (e.g. q, k, v)
form a group with one shared Hessian, and each group's inputs come from the block's already pruned groups.
Targets outside the chain (or every target, when there is no chain) are calibrated in one pass of the whole,
pruned-so-far model. Targets no statistics reach (embeddings, layers never called) are pruned by magnitude with
the same pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.spec.pruning import CalibratedPruningSpec
from worker.engine.errors import UnsupportedError
from worker.engine.models.calling import ModelInputs, caller, inputs_to, num_rows, rows
from worker.engine.models.offload import resident
from worker.engine.pruning.calibrated.blocks import BlockCall, BlockChain, find_chain, record_calls
from worker.engine.pruning.calibrated.layers import LayerView, layer_view
from worker.engine.pruning.calibrated.pruner import LayerPruner, magnitude_keep, pattern_of
from worker.engine.pruning.calibrated.stats import InputStats
from worker.engine.pruning.targets import PruneTarget

_LISTED = 8


def _silent(_fraction: float, _message: str) -> None:
    """No progress reporting."""


@dataclass
class Calibration:
    """What a calibrated pass runs on: the model and its calibration rows, fed in batches on ``device``."""

    module: nn.Module
    inputs: ModelInputs
    device: torch.device
    batch_size: int
    on_progress: Callable[[float, str], None] = field(default=_silent)

    def batches(self) -> list[ModelInputs]:
        n = num_rows(self.inputs)
        return [
            inputs_to(rows(self.inputs, slice(i, i + self.batch_size)), self.device)
            for i in range(0, n, self.batch_size)
        ]


@dataclass
class CalibrationResult:
    keep: dict[str, torch.Tensor]  # keep-mask of every target, by name
    notes: list[str]


@dataclass
class _Run:
    cal: Calibration
    pruner: LayerPruner
    views: dict[str, LayerView]  # targets a calibration can observe, by name
    sparsity: dict[str, float]
    keep: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def prune(self, names: Sequence[str], stats: InputStats) -> None:
        for name in names:
            self.keep[name] = self.pruner.prune(self.views[name], stats, self.sparsity[name])


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


@contextmanager
def _hooks(views: dict[str, LayerView], on_input: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """Forward pre-hooks passing each layer's first positional input to ``on_input(name, x)``."""

    def hook_for(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], torch.Tensor):
                on_input(name, args[0])

        return hook

    handles = [v.module.register_forward_pre_hook(hook_for(n)) for n, v in views.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _signature(view: LayerView) -> tuple[Any, ...]:
    """Layers with the same input and signature see the same columns (and share statistics)."""
    m = view.module
    conv = [getattr(m, a, None) for a in ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")]
    return (type(m), view.width, *conv)


def _groups(run: _Run, block: nn.Module, names: list[str], hidden: torch.Tensor, call: BlockCall) -> list[list[str]]:
    """The block's layers grouped by identical input, in the order the block first calls them (one batch)."""
    groups: list[tuple[torch.Tensor, tuple[Any, ...], list[str]]] = []  # inputs kept alive: no address reuse

    def seen(name: str, x: torch.Tensor) -> None:
        if any(name in members for *_, members in groups):
            return
        signature = _signature(run.views[name])
        for held, sig, members in groups:
            same = held is x or (held.data_ptr() == x.data_ptr() and held.shape == x.shape)
            if same and sig == signature:
                members.append(name)
                return
        groups.append((x, signature, [name]))

    with _hooks({n: run.views[n] for n in names}, seen):
        call.run(block, hidden)
    return [members for *_, members in groups]


def _run_block_group(
    run: _Run, block: nn.Module, group: list[str], hidden: list[torch.Tensor], calls: list[BlockCall]
) -> None:
    stats = run.pruner.new_stats()
    first = run.views[group[0]]

    def add(name: str, x: torch.Tensor) -> None:
        stats.add(first.columns(x))

    with _hooks({group[0]: first}, add):
        for h, c in zip(hidden, calls, strict=True):
            c.run(block, h)
    if stats.seen:
        run.prune(group, stats)


def _prune_chain(
    run: _Run, chain: BlockChain, batches: list[ModelInputs], run_model: Callable[[ModelInputs], Any]
) -> None:
    recorded = record_calls(chain, batches, run_model)
    if isinstance(recorded, str):
        run.notes.append(f"calibration: {recorded}; its layers were calibrated in one pass instead")
        return
    hidden, calls = recorded
    total = len(chain.blocks)
    for i, block in enumerate(chain.blocks):
        run.cal.on_progress(i / total, f"block {i + 1} of {total}")
        names = [n for n in run.views if n.startswith(chain.prefix(i)) and n not in run.keep]
        with resident(block):  # a streamed block (models.offload) stays on the device for all its calls
            if names:
                for group in _groups(run, block, names, hidden[0], calls[i][0]):
                    _run_block_group(run, block, group, hidden, calls[i])
            hidden = [c.run(block, h) for h, c in zip(hidden, calls[i], strict=True)]
    layers = sum(1 for n in run.keep if n.startswith(f"{chain.path}." if chain.path else ""))
    run.notes.append(
        f"calibration: {layers} layer(s) in the {total} blocks of {chain.path!r} pruned block by block, each block "
        "on the outputs of the already pruned blocks before it"
    )


def _one_pass(
    run: _Run, names: list[str], batches: list[ModelInputs], run_model: Callable[[ModelInputs], Any], chained: bool
) -> None:
    views = {n: run.views[n] for n in names}
    stats = {n: run.pruner.new_stats() for n in names}

    def add(name: str, x: torch.Tensor) -> None:
        stats[name].add(views[name].columns(x))

    with _hooks(views, add):
        for batch in batches:
            run_model(batch)
    seen = [n for n in names if stats[n].seen]
    for name in seen:
        run.prune([name], stats[name])
    if seen:
        where = "outside the blocks" if chained else "(no chain of blocks found)"
        run.notes.append(
            f"calibration: {len(seen)} layer(s) {where} calibrated in one pass of the "
            + ("pruned-so-far model" if chained else "model, so none saw inputs from pruned layers before it")
        )


@contextmanager
def _inference(module: nn.Module) -> Iterator[None]:
    """Eval mode and no key/value cache (repeated block calls must not grow one), restored afterwards."""
    was_training = module.training
    config = getattr(module, "config", None)
    use_cache = getattr(config, "use_cache", None)
    module.eval()
    if use_cache:
        config.use_cache = False  # type: ignore[union-attr]
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)
        if use_cache:
            config.use_cache = use_cache  # type: ignore[union-attr]


def calibrate(cal: Calibration, targets: Sequence[PruneTarget], cfg: CalibratedPruningSpec) -> CalibrationResult:
    """Prune ``targets`` of ``cal.module`` in place by ``cfg`` (Wanda or SparseGPT); their keep-masks and notes."""
    active = [t for t in targets if t.sparsity > 0.0]
    found = {t.name: layer_view(cal.module, t) for t in active}
    views = {n: v for n, v in found.items() if v is not None}
    if active and not views:
        raise UnsupportedError(
            f"{cfg.method} prunes linear and conv layers from the inputs they receive, and none of the targets is "
            "the weight of such a layer here (TorchScript and exported programs keep no layers to observe): use a "
            "state dict or Hugging Face checkpoint, or method magnitude"
        )
    run = _Run(cal, LayerPruner(cfg), views, {t.name: t.sparsity for t in targets})
    # Targets no statistics can reach are pruned first, so that the calibrated layers see their effect.
    _by_magnitude(
        run,
        [t for t in active if t.name not in views],
        found,
        cfg,
        "are not linear/conv layers (e.g. embeddings or norms)",
    )
    batches = cal.batches()
    call = caller(cal.module, list(cal.inputs))
    with _inference(cal.module):
        chain = find_chain(cal.module, [t for t in active if t.name in views])
        if chain is not None:
            _prune_chain(run, chain, batches, call)
        rest = [n for n in views if n not in run.keep]
        if rest:
            _one_pass(run, rest, batches, call, chained=bool(run.keep))
    _by_magnitude(
        run, [t for t in active if t.name not in run.keep], found, cfg, "received no inputs during calibration"
    )
    # on the parameter's device: a streamed block's layers were pruned on the device and rest in host memory
    keep = {t.name: _keep_of(run, t).to(t.param.device) for t in targets}
    return CalibrationResult(keep, run.notes)


def _keep_of(run: _Run, target: PruneTarget) -> torch.Tensor:
    found = run.keep.get(target.name)
    return found if found is not None else torch.ones_like(target.param, dtype=torch.bool)


@torch.no_grad()
def _by_magnitude(
    run: _Run, left: Sequence[PruneTarget], found: dict[str, LayerView | None], cfg: CalibratedPruningSpec, why: str
) -> None:
    """Magnitude masks, with the same pattern, for targets no calibration statistics reach."""
    for t in left:
        keep = magnitude_keep(t.param, pattern_of(cfg, t.sparsity), found[t.name])
        t.param.masked_fill_(~keep, 0.0)
        run.keep[t.name] = keep
    if left:
        run.notes.append(
            f"calibration: {len(left)} target(s) {why}, so they were pruned by magnitude with the same pattern: "
            f"{_listed([t.name for t in left])}"
        )
