"""``method: transformer_structural``: a Hugging Face transformer with fewer heads, MLP channels, hidden
dimensions and blocks, recovered by distillation from the original, saved with a rewritten config.json."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from typing import Any

import torch

from prunekit.spec import DistillationSpec, FinetuneSpec, PruningSpec
from prunekit.spec.pruning import TransformerStructuralPruning
from prunekit.spec.report import Report, TransformerStructuralReport, TransformerWidths
from worker.engine.errors import InvalidSpecError, UnsupportedError
from worker.engine.evaluation.latency import interleaved_speedup
from worker.engine.evaluation.sparsity import count_params
from worker.engine.job_state import JobState
from worker.engine.measure import Measurement
from worker.engine.models.calling import num_rows, rows
from worker.engine.models.handle import LoadedModel
from worker.engine.pruned_stage import val_split
from worker.engine.strategies.base import PruneOutcome, PruningStrategy, default_output_format, report_epoch
from worker.engine.training.finetune import FinetuneResult, TrainContext, finetune
from worker.engine.training.hidden_match import HiddenMatch
from worker.engine.training.masking import NoMasks
from worker.engine.training.regularizers import RegularizedLoss
from worker.engine.transformer_structural import (
    Scores,
    Selection,
    activation_scores,
    apply_selection,
    choose_widths,
    family_of,
    hidden_layers_outside_blocks,
    magnitude_scores,
    params_of,
    plan_widths,
    select,
    widths_of,
)
from worker.engine.transformer_structural.budget import Fits

UNIFORM_NOTE = (
    "widths are the same in every layer: config.json states one head count, MLP size and hidden size for all "
    "blocks, so per-layer widths could not be reloaded with plain transformers; which heads and channels are kept "
    "is still chosen per layer"
)


class TransformerStructuralStrategy(PruningStrategy):
    """Remove heads, MLP channels, hidden size and blocks of a Hugging Face checkpoint (uniform widths)."""

    def __init__(self, cfg: TransformerStructuralPruning) -> None:
        self.cfg = cfg
        self.section: TransformerStructuralReport | None = None  # set by prune, read by fill_report

    @classmethod
    def for_spec(cls, cfg: PruningSpec) -> TransformerStructuralStrategy:
        """The strategy of a transformer_structural config."""
        if not isinstance(cfg, TransformerStructuralPruning):
            raise InvalidSpecError(f"pruning method {cfg.method!r} is not transformer_structural")
        return cls(cfg)

    @property
    def target_sparsity(self) -> float:
        if self.cfg.target_params is not None:
            return round(1.0 - self.cfg.target_params, 6)
        return max(self.cfg.attention_heads, self.cfg.mlp, self.cfg.hidden_size, self.cfg.layers)

    def output_format(self, model: LoadedModel, requested: str) -> str:
        """The checkpoint's own format; the pre-flight legality check runs here, in the load stage."""
        if model.hf_source is None:
            raise UnsupportedError(
                "transformer_structural prunes Hugging Face checkpoints (an archived save_pretrained folder); for "
                "other models use method 'structural'"
            )
        config: Any = getattr(model.module, "config")  # noqa: B009 - every transformers model has one
        plan_widths(config, self.cfg, model.task)  # illegal ratios are refused here, naming the legal ones
        if self.cfg.hidden_size > 0 or (family_of(config).tied_hidden and self.cfg.attention_heads > 0):
            hidden_layers_outside_blocks(family_of(config), model.module)
        return default_output_format(model, requested)

    def prune(self, state: JobState, model: LoadedModel, teacher: Measurement) -> PruneOutcome:
        """Score and remove (stage 'prune'), measure, then recover by distillation (stage 'finetune')."""
        module: Any = model.module
        before, params_before = widths_of(module.config), count_params(module)[0]
        with state.stage("prune", "scoring heads, channels and blocks"):
            started = time.perf_counter()
            scores, notes = self._scores(state, model, before)
            choice = choose_widths(module.config, self.cfg, model.task, self._fits(state, model, scores, before))
            selection = select(scores, before, choice.widths)
            apply_selection(module, selection)
            seconds = time.perf_counter() - started
        section = TransformerStructuralReport(
            model_type=str(module.config.model_type),
            widths_before=before,
            widths_after=choice.widths,
            removed_layers=[i for i in range(before.num_hidden_layers) if i not in selection.kept_layers],
            importance=scores.source,
            calibration_rows=scores.rows,
            params_before=params_before,
            params_after=count_params(module)[0],
            scale=choice.scale,
            budget=self._budget(),
            budget_reached=choice.reached,
            measured_speedup=choice.measured_speedup,
            after_pruning=val_split(state, model),
            seconds=round(seconds, 4),
            notes=[*notes, *self._notes(before, choice.reached)],
        )
        result, section.recovery = _recover(state, model, teacher, _hidden_match(state, model, selection))
        state.notes.append(_summary(section))
        self.section = section
        return PruneOutcome(result, [])  # nothing is masked: the sparsity stats count no target

    def fill_report(self, report: Report) -> None:
        """The transformer_structural section."""
        report.transformer_structural = self.section

    def _scores(self, state: JobState, model: LoadedModel, before: TransformerWidths) -> tuple[Scores, list[str]]:
        family, batches, notes = family_of(model.module.config), list(_calibration(state)), []
        if not batches:
            raise InvalidSpecError("transformer_structural needs data or a sample to rank blocks on")
        scores = activation_scores(family, model.module, before, batches, state.device)
        if state.data is None:
            notes.append("no data: blocks ranked on the job's random token sample")
        if self.cfg.importance == "magnitude" or state.data is None:
            if self.cfg.importance == "activation":
                notes.append("no data: heads, channels and hidden dimensions ranked by weight magnitude")
            magnitude = magnitude_scores(family, model.module, before, scores.blocks)
            magnitude.rows = scores.rows
            return magnitude, notes
        return scores, notes

    def _fits(self, state: JobState, model: LoadedModel, scores: Scores, before: TransformerWidths) -> Fits | None:
        module: Any = model.module
        if self.cfg.target_params is not None:
            limit = self.cfg.target_params * count_params(module)[0]
            return lambda w: (params_of(module.config, model.task, w) <= limit, None)
        if self.cfg.target_speedup is None:
            return None
        assert state.inputs is not None  # set in the load stage
        measure = interleaved_speedup(state.inputs, state.spec.evaluation.latency, state.device)
        target = self.cfg.target_speedup

        def fits(widths: TransformerWidths) -> tuple[bool, float]:
            candidate = copy.deepcopy(module)
            apply_selection(candidate, select(scores, before, widths))
            speedup = measure(module, candidate)[0]
            return speedup >= target, round(speedup, 4)

        return fits

    def _budget(self) -> str | None:
        if self.cfg.target_params is not None:
            return f"target_params {self.cfg.target_params}"
        return f"target_speedup {self.cfg.target_speedup}" if self.cfg.target_speedup is not None else None

    def _notes(self, before: TransformerWidths, reached: bool | None) -> list[str]:
        notes = [UNIFORM_NOTE]
        if self.cfg.attention_heads > 0 and before.num_key_value_heads < before.num_attention_heads:
            how = "whole key/value groups" if self.cfg.gqa == "groups" else "query heads within every group"
            notes.append(f"grouped-query attention: removed {how} (gqa '{self.cfg.gqa}')")
        if reached is False:
            notes.append(f"{self._budget()} was not reached within the ratios given: pruned at those ratios")
        return notes


def _calibration(state: JobState) -> Iterator[Mapping[str, torch.Tensor]]:
    """The first data.calibration_samples training rows in batches, or the job's one sample without data."""
    if state.data is None:
        if state.inputs is not None:
            yield state.inputs
        return
    train = state.data.train_inputs()
    count = min(state.spec.data.calibration_samples, num_rows(train))
    size = max(1, min(state.spec.evaluation.batch_size, count))
    for start in range(0, count, size):
        yield rows(train, slice(start, min(start + size, count)))


def _recovery_spec(ft: FinetuneSpec) -> FinetuneSpec:
    """Fine-tuning with distillation from the original (its defaults unless the spec sets it)."""
    if ft.regularizers.distillation is not None:
        return ft
    regs = ft.regularizers.model_copy(update={"distillation": DistillationSpec()})
    return ft.model_copy(update={"regularizers": regs})


def _hidden_match(state: JobState, model: LoadedModel, selection: Selection) -> HiddenMatch | None:
    """Block-output matching for recovery when the spec weights it (distillation.hidden_states > 0)."""
    d = state.spec.finetune.regularizers.distillation
    if d is None or d.hidden_states == 0 or state.teacher is None or state.data is None:
        return None
    family = family_of(model.module.config)
    student, original = list(family.blocks(model.module)), list(family.blocks(state.teacher))
    return HiddenMatch(student, original, selection.kept_layers, selection.hidden, d.hidden_states)


def _recover(
    state: JobState, model: LoadedModel, teacher: Measurement, hidden: HiddenMatch | None
) -> tuple[FinetuneResult, str | None]:
    """Distil the smaller model from the original (the shared fine-tuning loop, nothing masked)."""
    data, ft = state.data, _recovery_spec(state.spec.finetune)
    if data is None or ft.epochs == 0:
        return FinetuneResult(), None
    loss = RegularizedLoss(ft.regularizers, [], [], data.labelled, data.features)
    needs = loss.needs_teacher
    ctx = TrainContext(
        model=model,
        data=data,
        masks=NoMasks(),
        loss=loss,
        teacher_train_logits=teacher.train_logits if needs else None,
        teacher_val_logits=teacher.val_logits if needs else None,
        device=state.device,
        amp=state.device.type == "cuda",
        seed=state.spec.seed,
        eval_batch_size=state.spec.evaluation.batch_size,
        fixed_batch=model.fixed_batch_size,
        teacher_module=state.teacher if needs or hidden is not None else None,
        hidden=hidden,
    )
    with state.stage("finetune"), hidden.recording() if hidden is not None else nullcontext():
        result = finetune(ctx, ft, lambda r, f: report_epoch(state, r, f))
    state.notes.extend(result.notes)
    return result, _recovery_text(ft, data.features, data.labelled)


def _recovery_text(ft: FinetuneSpec, features: bool, labelled: bool) -> str:
    d = ft.regularizers.distillation or DistillationSpec()
    epochs = f"{ft.epochs} epoch{'s' if ft.epochs != 1 else ''}"
    if features:
        return f"{epochs} toward the original's mean-pooled outputs (MSE)"
    task = f" plus {1 - d.alpha:g} x the task loss" if labelled and d.alpha < 1 else ""
    hidden = f" plus {d.hidden_states:g} x MSE of each kept block's output" if d.hidden_states > 0 else ""
    return f"{epochs} of distillation from the original: {d.alpha:g} x KL on logits (T {d.temperature:g}){task}{hidden}"


def _summary(section: TransformerStructuralReport) -> str:
    b, a = section.widths_before, section.widths_after
    return (
        f"transformer_structural: heads {b.num_attention_heads}->{a.num_attention_heads} (key/value "
        f"{b.num_key_value_heads}->{a.num_key_value_heads}), MLP {b.intermediate_size}->{a.intermediate_size}, "
        f"hidden {b.hidden_size}->{a.hidden_size}, blocks {b.num_hidden_layers}->{a.num_hidden_layers}; parameters "
        f"{section.params_before} -> {section.params_after}; config.json rewritten"
    )
