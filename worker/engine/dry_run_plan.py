"""The dry run's plan: which layers the requested pruning touches, what blocks it, and the sizes it would leave.

Mask methods are planned with plan_targets (no mask is computed); structural pruning removes channels from a
copy of the model, which leaves the input model as it is. Problems are collected in ``Findings``, not raised.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prunekit.spec.pruning import (
    MaskPruningSpec,
    SparseGPTPruning,
    StructuralPruning,
    TransformerStructuralPruning,
    WandaPruning,
)
from prunekit.spec.report import (
    DryRunEstimate,
    DryRunLayer,
    DryRunProblem,
    DryRunProblemCode,
    NotPrunable,
    SkippedLayer,
    StructuralBlocker,
)
from worker.engine.errors import EngineError, InvalidSpecError, UnsupportedError
from worker.engine.evaluation.flops import count_flops
from worker.engine.evaluation.sparsity import count_params
from worker.engine.job_state import JobState
from worker.engine.models.calling import batch_of, inputs_to
from worker.engine.models.handle import LoadedModel
from worker.engine.models.sparse import FORMAT as SPARSE_FORMAT
from worker.engine.pruning import PruneTarget, plan_targets
from worker.engine.pruning.fit import split_unfit
from worker.engine.pruning.ties import unique_parameters
from worker.engine.strategies.structural import NOTHING_REMOVED
from worker.engine.structural import LatencyFn, prune_structurally

Code = DryRunProblemCode
_LAYER_RE = re.compile(r"(?:layer|parameter) '([^']+)'")


@dataclass
class Findings:
    """What the dry run collects instead of raising: problems, notes, structural blockers."""

    problems: list[DryRunProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blockers: list[StructuralBlocker] = field(default_factory=list)

    def add(self, code: DryRunProblemCode, problem: EngineError | str) -> None:
        """Record one problem; an engine error is recorded with its own message."""
        message = problem.message if isinstance(problem, EngineError) else problem
        self.problems.append(DryRunProblem(code=code, message=message))

    def block(self, exc: EngineError) -> None:
        """Record what refuses structural pruning, as a blocker and as a problem."""
        named = _LAYER_RE.search(exc.message)
        self.blockers.append(StructuralBlocker(layer=named.group(1) if named else None, message=exc.message))
        self.add(Code.STRUCTURAL_BLOCKED, exc)


@dataclass
class Plan:
    """The planned pruning: layers it touches, the output layers it keeps, and the expected sizes."""

    layers: list[DryRunLayer] = field(default_factory=list)
    estimate: DryRunEstimate | None = None
    classifier: list[str] = field(default_factory=list)
    not_prunable: list[NotPrunable] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)  # targets that cannot hold the N:M pattern


def plan_pruning(state: JobState, model: LoadedModel, found: Findings) -> Plan:
    """The requested pruning planned on the loaded model (and its sample, when one ran); nothing is pruned."""
    cfg = state.spec.pruning
    if isinstance(cfg, TransformerStructuralPruning):
        return _transformer_plan(state, model, cfg, found)
    if not isinstance(cfg, StructuralPruning):
        return _mask_plan(state, model, cfg, found)
    if model.format == "huggingface":
        return Plan()  # refused up front, as a blocker (see _output_format)
    if state.sample is None:
        found.notes.append("dry run: without a sample the model runs on, structural pruning was not checked")
        return Plan(estimate=_mask_estimate(state, model, []))
    return _structural_plan(state, model, cfg, found)


# --- mask methods ---------------------------------------------------------------------------------------------


def _mask_plan(state: JobState, model: LoadedModel, cfg: MaskPruningSpec, found: Findings) -> Plan:
    """The targets plan_targets picks (the classifier traced on the sample), and the sizes masks would leave."""
    batch = batch_of(state.inputs, model.fixed_batch_size or 1) if state.inputs is not None else None
    trace = inputs_to(batch, state.device) if batch is not None else None
    try:
        plan = plan_targets(model.module, cfg, trace)
    except EngineError as exc:
        found.add(Code.PRUNING_PLAN, exc)
        return Plan(estimate=_mask_estimate(state, model, []))
    found.notes.extend(plan.notes())
    try:
        targets, skipped = split_unfit(model.module, plan.targets, cfg)
    except UnsupportedError as exc:
        found.add(Code.PRUNING_PLAN, exc)
        targets, skipped = plan.targets, []
    if isinstance(cfg, WandaPruning | SparseGPTPruning) and state.data is None:
        found.add(
            Code.NEEDS_DATA,
            f"{cfg.method} needs calibration data: give a dataset (its first data.calibration_samples training "
            "rows choose the weights to prune)",
        )
    layers = [
        DryRunLayer(
            name=t.name,
            shape=list(t.param.shape),
            params=t.param.numel(),
            sparsity=t.sparsity,
            params_after=t.param.numel() - _removed(t),
        )
        for t in targets
    ]
    return Plan(layers, _mask_estimate(state, model, targets), plan.classifier, plan.not_prunable, skipped)


def _removed(t: PruneTarget) -> int:
    return round(t.param.numel() * t.sparsity)


def _mask_estimate(state: JobState, model: LoadedModel, targets: list[PruneTarget]) -> DryRunEstimate:
    """Dense MACs stay; the MACs a sparse kernel could skip to are counted on a copy zeroed at the planned rates."""
    total, _ = count_params(model.module)
    copy = model.clone().module if targets and state.inputs is not None else model.module
    params = dict(unique_parameters(copy)[0])
    with torch.no_grad():
        for t in targets:
            keep = torch.ones(t.param.numel(), dtype=t.param.dtype, device=t.param.device)
            keep[: _removed(t)] = 0  # which weights does not matter here: the counter sees densities
            params[t.name].mul_(keep.view_as(params[t.name]))
    dense, effective = _flops(state, copy, model.fixed_batch_size) if state.inputs is not None else (None, None)
    return DryRunEstimate(
        params_before=total,
        params_after=total - sum(_removed(t) for t in targets),
        macs_before=dense // 2 if dense is not None else None,
        macs_after=effective // 2 if effective is not None else None,
        file_bytes_before=_input_bytes(state.model_path),
        file_bytes_after=_mask_file_bytes(state, model, targets),
        method="mask: each target at its planned sparsity (a global ranking spreads it unevenly; the total is "
        "the same); MACs are FLOPs / 2 from torch.utils.flop_counter on the sample, after: each op weighted by its "
        "weight's planned density (what a sparse kernel could skip, not a speedup)",
    )


def _mask_file_bytes(state: JobState, model: LoadedModel, targets: list[PruneTarget]) -> int:
    """The input's size (zeros are stored densely), or for sparse_state_dict what survives at the planned rates."""
    if state.spec.output.format != SPARSE_FORMAT:
        return _input_bytes(state.model_path)
    planned = {t.name: t.sparsity for t in targets}
    total = 0
    for name, param in unique_parameters(model.module)[0]:
        total += _sparse_bytes(param.numel(), param.element_size(), planned.get(name, 0.0))
    return total


def _sparse_bytes(numel: int, itemsize: int, sparsity: float) -> int:
    """A sparse_state_dict tensor's bytes: the kept values raw and the gaps at the mask's entropy (an upper-ish bound:
    the file codes each gap with its value's top byte, so it is smaller still, tests/worker/engine/test_dry_run.py)."""
    if sparsity < 0.1:
        return numel * itemsize  # stored as is
    kept = numel * (1.0 - sparsity)
    entropy = -(sparsity * math.log2(sparsity) + (1 - sparsity) * math.log2(1 - sparsity)) if sparsity < 1 else 0.0
    return round(kept * itemsize + numel * entropy / 8)


def _flops(state: JobState, module: torch.nn.Module, fixed_batch: int | None) -> tuple[int, int]:
    assert state.inputs is not None
    per_call = fixed_batch or 1  # a program exported with a static batch size runs only at that size
    dense, effective = count_flops(module, inputs_to(batch_of(state.inputs, per_call), state.device))
    return dense // per_call, effective // per_call


# --- structural -----------------------------------------------------------------------------------------------


def _structural_plan(state: JobState, model: LoadedModel, cfg: StructuralPruning, found: Findings) -> Plan:
    """Remove channels from a copy (the input model is left as it is) to learn the widths and MACs it would reach."""
    assert state.sample is not None
    cfg = _dry_config(state, cfg, found)
    latency_fn = None
    if cfg.target_speedup is not None:
        # Nothing is timed in a dry run: the speedup is taken as the MACs reduction (an estimate).
        found.notes.append("dry run: target_speedup estimated as a MACs reduction; the full job times candidates")
        latency_fn = _macs_of(state.sample)
    try:
        result = prune_structurally(model.module, cfg, state.sample, None, latency_fn=latency_fn)
    except UnsupportedError as exc:
        found.block(exc)
        return Plan()
    except InvalidSpecError as exc:
        found.add(Code.PRUNING_PLAN, exc)
        return Plan()
    if not result.widths and result.params_after >= result.params_before:
        found.blockers.append(StructuralBlocker(message=NOTHING_REMOVED))
        found.add(Code.STRUCTURAL_BLOCKED, NOTHING_REMOVED)
    size = _input_bytes(state.model_path)
    estimate = DryRunEstimate(
        params_before=result.params_before,
        params_after=result.params_after,
        macs_before=result.macs_before,
        macs_after=result.macs_after,
        file_bytes_before=size,
        file_bytes_after=round(size * result.params_after / max(result.params_before, 1)),
        method="structural: channels removed from a copy of the model and counted by torch-pruning on the sample",
    )
    return Plan(_changed_layers(model.module, result.module, list(result.widths)), estimate)


def _dry_config(state: JobState, cfg: StructuralPruning, found: Findings) -> StructuralPruning:
    """Taylor importance needs gradients on data: the dry run ranks channels by magnitude instead."""
    if cfg.importance != "taylor":
        return cfg
    if state.data is None or not state.data.labelled:
        found.add(Code.NEEDS_DATA, "importance 'taylor' needs labelled data: pass a dataset with the job")
    found.notes.append("dry run: channels ranked by magnitude instead of taylor (same widths unless global_ranking)")
    return cfg.model_copy(update={"importance": "magnitude"})


def _macs_of(sample: torch.Tensor) -> LatencyFn:
    import torch_pruning as tp

    def macs(module: torch.nn.Module) -> float:
        return float(tp.utils.count_ops_and_params(module, sample)[0])

    return macs


def _changed_layers(before: torch.nn.Module, after: torch.nn.Module, names: list[str]) -> list[DryRunLayer]:
    """Conv/linear layers whose widths the removal changed, with their parameters before and after."""
    old, new = dict(before.named_modules()), dict(after.named_modules())
    rows = []
    for name in names:
        weight = getattr(old.get(name), "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
            continue  # norms and other coupled layers shrink with the layer they follow
        n_before = sum(p.numel() for p in old[name].parameters())
        n_after = sum(p.numel() for p in new[name].parameters())
        rows.append(
            DryRunLayer(
                name=name,
                shape=list(weight.shape),
                params=n_before,
                sparsity=round(1 - n_after / max(n_before, 1), 4),
                params_after=n_after,
            )
        )
    return rows


# --- transformer_structural -----------------------------------------------------------------------------------


def _transformer_plan(state: JobState, model: LoadedModel, cfg: TransformerStructuralPruning, found: Findings) -> Plan:
    """The widths the config allows, checked on config.json alone; an illegal ratio is a blocker with the legal ones."""
    from worker.engine.transformer_structural.legality import legal_head_ratios, plan_widths

    config = getattr(model.module, "config", None)
    if model.hf_source is None or config is None:
        found.block(UnsupportedError("transformer_structural prunes Hugging Face checkpoints only"))
        return Plan()
    try:
        plan_widths(config, cfg, model.task)
    except EngineError as exc:
        try:
            legal: list[float] | None = legal_head_ratios(config, cfg.gqa)
        except EngineError:
            legal = None  # a family it does not support: no ratio is legal to name
        found.blockers.append(StructuralBlocker(message=exc.message, legal_ratios=legal))
        found.add(Code.STRUCTURAL_BLOCKED, exc)
        return Plan()
    return Plan(estimate=_transformer_estimate(state, model, cfg, found))


def _transformer_estimate(
    state: JobState, model: LoadedModel, cfg: TransformerStructuralPruning, found: Findings
) -> DryRunEstimate | None:
    """Parameters of the rewritten config (ratios as given, or the target_params search, which needs no data)."""
    from worker.engine.transformer_structural import choose_widths, params_of

    if cfg.target_speedup is not None:
        found.notes.append("dry run: target_speedup widths are chosen by timing candidates; sizes not estimated")
        return None
    module: Any = model.module
    total = count_params(module)[0]
    fits = None
    if cfg.target_params is not None:
        limit = cfg.target_params * total
        fits = lambda widths: (params_of(module.config, model.task, widths) <= limit, None)  # noqa: E731
    after = params_of(module.config, model.task, choose_widths(module.config, cfg, model.task, fits).widths)
    size = _input_bytes(state.model_path)
    return DryRunEstimate(
        params_before=total,
        params_after=after,
        file_bytes_before=size,
        file_bytes_after=round(size * after / max(total, 1)),
        method="transformer_structural: parameters of the rewritten config built on the meta device (tied weights "
        "once), file size scaled by the parameter ratio; MACs not counted",
    )


def _input_bytes(path: Path) -> int:
    """Bytes of an uploaded model: a file's size, or the files of a checkpoint folder."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
