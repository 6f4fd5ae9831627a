"""After pruning: what it did to each layer (notes), and a model whose outputs stopped depending on its inputs
fails the job, whatever its gates say (a constant classifier can still pass an accuracy gate on skewed data)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from prunekit.spec.pruning import MagnitudePruning, MaskPruningSpec, RandomPruning
from worker.engine.errors import InvalidSpecError
from worker.engine.evaluation.sparsity import HIGH_SPARSITY, is_high
from worker.engine.job_state import JobState
from worker.engine.models.calling import ModelInputs, as_inputs, caller, inputs_to, num_rows, pad_rows, rows
from worker.engine.models.handle import LoadedModel
from worker.engine.models.outputs import output_tensors
from worker.engine.pruning import PruneTarget

CHECK_ROWS = 16
_LISTED = 8


@dataclass
class Probe:
    """Whether each output, and each leaf layer's output (eager modules), differs between the rows of a batch."""

    outputs: list[bool]
    layers: dict[str, bool] = field(default_factory=dict)  # in the order the layers finished
    rows: int = 0


def _varies(t: torch.Tensor, rows: int) -> bool | None:
    """Rows differ by more than rounding; None where the tensor has no batch dimension of ``rows``."""
    if not t.is_floating_point() or t.dim() == 0 or t.shape[0] != rows or rows < 2:
        return None
    t = t.detach().float()
    return bool((t - t[:1]).abs().amax() > 1e-6 * (1.0 + float(t.abs().amax())))


def check_batch(state: JobState, model: LoadedModel) -> ModelInputs | None:
    """Distinct inputs to probe with: validation rows, else noise shaped like a single float sample; None if neither."""
    data = state.data
    if data is not None and len(data.x_val) >= 2:
        val_inputs = getattr(data, "val_inputs", None)  # named inputs, where the dataset has several
        inputs = rows(val_inputs() if callable(val_inputs) else {"x": data.x_val}, slice(0, CHECK_ROWS))
    else:
        sample = job_inputs(state)
        if len(sample) != 1 or not next(iter(sample.values())).is_floating_point():
            return None
        name, x = next(iter(sample.items()))
        gen = torch.Generator().manual_seed(state.spec.seed + 1)
        spread = float(x.std()) if x.numel() > 1 and float(x.std()) > 0 else 1.0
        inputs = {name: float(x.mean()) + spread * torch.randn((CHECK_ROWS, *x.shape[1:]), generator=gen)}
    per_call = model.fixed_batch_size or num_rows(inputs)
    return pad_rows(inputs, per_call * math.ceil(num_rows(inputs) / per_call))


def job_inputs(state: JobState) -> ModelInputs:
    """The job's batch-1 sample of every model input, by name (empty when there is none)."""
    named = getattr(state, "inputs", None)  # all inputs, where the job declares several
    if named:
        return dict(named)
    return as_inputs(state.sample) if state.sample is not None else {}


@contextmanager
def _layer_hooks(module: torch.nn.Module, rows: int, seen: dict[str, bool]) -> Iterator[None]:
    handles = []
    try:
        for name, m in module.named_modules():
            if name and not any(True for _ in m.children()):

                def hook(_m: torch.nn.Module, _a: object, out: object, name: str = name) -> None:
                    flags = [v for v in (_varies(t, rows) for t in output_tensors(out)) if v is not None]
                    if flags:
                        seen[name] = seen.get(name, False) or any(flags)

                handles.append(m.register_forward_hook(hook))
    except (RuntimeError, AttributeError):  # TorchScript modules take no new hooks: outputs only
        pass
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def probe(model: LoadedModel, batch: ModelInputs, device: torch.device) -> Probe | None:
    """Run ``batch`` (in the program's static batch size, if any); which outputs vary across rows. None: cannot run."""
    n = num_rows(batch)
    per_call = model.fixed_batch_size or n
    layers: dict[str, bool] = {}
    call = caller(model.module, list(batch))
    chunks = []
    model.set_train(False)  # dropout off, and BatchNorm must not learn from the probe
    try:
        with _layer_hooks(model.module, n, layers) if per_call == n else nullcontext():
            for start in range(0, n, per_call):
                out = call(inputs_to(rows(batch, slice(start, start + per_call)), device))
                chunks.append([t.detach().cpu() for t in output_tensors(out)])
        outputs = [torch.cat(parts) for parts in zip(*chunks, strict=True)]
    except Exception:  # a model this probe cannot drive: the job's own stages report its errors
        return None
    flags = [_varies(t, n) for t in outputs]
    return Probe([bool(f) for f in flags if f is not None], layers, n)


def check_not_collapsed(before: Probe, after: Probe, empty: Sequence[str]) -> None:
    """Raise when an output that varied across inputs before pruning is the same for every input after it."""
    lost = [i for i, (b, a) in enumerate(zip(before.outputs, after.outputs, strict=False)) if b and not a]
    if not lost:
        return
    first = next((n for n, v in before.layers.items() if v and not after.layers.get(n, True)), None)
    where = f" The first layer whose output stopped depending on the input: {first!r}." if first else ""
    zeroed = f" Layers with every weight pruned: {_listed(empty)}." if empty else ""
    raise InvalidSpecError(
        f"pruning made the model's output constant: on {after.rows} different inputs every row of output "
        f"{_listed([str(i) for i in lost])} is the same, so the model no longer depends on its input (it did "
        f"before pruning).{zeroed}{where} Lower the sparsity, keep max_layer_sparsity below 1.0, or exclude or "
        "override those layers"
    )


def layer_sparsities(targets: Sequence[PruneTarget]) -> dict[str, float]:
    """Measured share of zeros of each target, after pruning."""
    return {
        t.name: 1.0 - int(torch.count_nonzero(t.param.detach())) / t.param.numel() for t in targets if t.param.numel()
    }


def layer_notes(targets: Sequence[PruneTarget], cfg: MaskPruningSpec) -> list[str]:
    """Layers the global ceiling held, a global target it kept out of reach, and layers pruned nearly empty."""
    per = layer_sparsities(targets)
    notes = []
    if isinstance(cfg, MagnitudePruning | RandomPruning) and cfg.scope == "global":
        notes.extend(_ceiling_notes(targets, per, cfg))
    sizes = {t.name: t.param.numel() for t in targets}
    high = sorted((n for n, s in per.items() if is_high(round(s * sizes[n]), sizes[n])), key=lambda n: -per[n])
    if high:
        shown = ", ".join(f"{n} ({per[n]:.1%})" for n in high[:_LISTED])
        notes.append(f"{len(high)} pruned layer(s) at or above {HIGH_SPARSITY:.0%} sparsity: {shown}")
    return notes


def _ceiling_notes(
    targets: Sequence[PruneTarget], per: dict[str, float], cfg: MagnitudePruning | RandomPruning
) -> list[str]:
    ceiling = cfg.layer_ceiling()
    pool = [t for t in targets if not t.overridden and t.sparsity == cfg.sparsity and t.param.numel()]
    if ceiling >= 1.0 or not pool:
        return []
    held = [t.name for t in pool if per[t.name] >= math.floor(ceiling * t.param.numel()) / t.param.numel() - 1e-9]
    size = sum(t.param.numel() for t in pool)
    reached = sum(per[t.name] * t.param.numel() for t in pool) / size
    notes = []
    if held:
        notes.append(
            f"global ranking: {len(held)} layer(s) held at max_layer_sparsity {ceiling:g} ({_listed(held)}); "
            "the weights they could not lose were taken from the other layers"
        )
    if reached < cfg.sparsity - 1.0 / size - 1e-6:
        notes.append(
            f"the global target {cfg.sparsity:g} is out of reach with max_layer_sparsity {ceiling:g}: the pruned "
            f"layers reached {reached:.4f} (raise max_layer_sparsity; 1.0 lets the ranking remove whole layers)"
        )
    return notes


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")
