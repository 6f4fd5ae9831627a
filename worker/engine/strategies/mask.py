"""Mask strategies (magnitude, random, channel, nm, ...): zero weights by keep-masks, while fine-tuning or not."""

from __future__ import annotations

from prunekit.spec import FinetuneSpec, MaskPruningSpec, PruningSpec
from prunekit.spec.report import Report, SkippedLayer, SplitMetrics
from worker.engine.errors import InvalidSpecError
from worker.engine.job_state import JobState
from worker.engine.measure import Measurement
from worker.engine.models.calling import ModelInputs, batch_of, inputs_to
from worker.engine.models.handle import LoadedModel
from worker.engine.pruned_stage import oneshot_val
from worker.engine.pruning import PruneTarget, TargetPlan, plan_targets
from worker.engine.pruning.fit import skipped_note, split_unfit
from worker.engine.strategies.base import PruneOutcome, PruningStrategy, report_epoch
from worker.engine.strategies.health import (
    check_batch,
    check_not_collapsed,
    job_inputs,
    layer_notes,
    layer_sparsities,
    probe,
)
from worker.engine.training.finetune import FinetuneResult
from worker.engine.training.masking import MaskController
from worker.engine.training.phases import PhaseInputs, prune_and_recover, recovery_spec, regularize_phase, renumber

# Said once for every mask method: masks keep the dense shapes, so the runtime does the same work.
MASK_SPEED_NOTE = (
    "masks zero weights but keep every dense shape: unstructured and N:M masks save no time without a sparse kernel "
    "on the deployment runtime (channel masks none until the channels are removed, e.g. with method structural); "
    "they save storage (see the zipped size, size_after.artifact_zipped_bytes)"
)


class MaskStrategy(PruningStrategy):
    """Any method registered in ``worker.engine.pruning.registry``: the masks differ, the training plan does not."""

    def __init__(self, cfg: MaskPruningSpec) -> None:
        self.cfg = cfg
        self.plan: TargetPlan | None = None  # set by prune, read by fill_report
        self.skipped: list[SkippedLayer] = []  # targets left dense: they cannot hold the N:M pattern
        self.pruned_val: SplitMetrics | None = None  # the 'pruned' stage: final masks before fine-tuning

    @classmethod
    def for_spec(cls, cfg: PruningSpec) -> MaskStrategy:
        """The strategy of a mask-method config."""
        if not isinstance(cfg, MaskPruningSpec):
            raise InvalidSpecError(f"pruning method {cfg.method!r} is not a mask method")
        return cls(cfg)

    @property
    def target_sparsity(self) -> float:
        return self.cfg.sparsity

    def prune(self, state: JobState, model: LoadedModel, teacher: Measurement) -> PruneOutcome:
        """Prune (while fine-tuning when there are data and epochs); fail if the outputs became constant."""
        batch = check_batch(state, model)
        before = probe(model, batch, state.device) if batch is not None else None
        self.plan = plan_targets(model.module, self.cfg, _trace_input(state, model))
        state.notes.extend(self.plan.notes())
        self.plan.targets, self.skipped = split_unfit(model.module, self.plan.targets, self.cfg)
        if self.skipped:
            state.notes.append(skipped_note(self.skipped))
        state.notes.append(MASK_SPEED_NOTE)
        outcome = self._prune(state, model, teacher, self.plan.targets)
        state.notes.extend(layer_notes(self.plan.targets, self.cfg))
        after = probe(model, batch, state.device) if before is not None and batch is not None else None
        if before is not None and after is not None:
            empty = [n for n, s in layer_sparsities(self.plan.targets).items() if s >= 1.0]
            check_not_collapsed(before, after, empty)
        return outcome

    def fill_report(self, report: Report) -> None:
        """The classifier found, how, and the weights no method could prune, in ``report.sparsity``."""
        if self.plan is None:
            return
        report.sparsity.classifier = self.plan.classifier
        report.sparsity.classifier_source = self.plan.classifier_source
        report.sparsity.not_prunable = self.plan.not_prunable
        report.sparsity.skipped_layers = self.skipped
        if not report.sparsity.tied:
            report.sparsity.tied = self.plan.tied

    def _prune(
        self, state: JobState, model: LoadedModel, teacher: Measurement, targets: list[PruneTarget]
    ) -> PruneOutcome:
        """Prune once without data or epochs; otherwise (regularize, then) prune while fine-tuning."""
        names = [t.name for t in targets]
        ft = state.spec.finetune
        if state.data is None or (ft.epochs == 0 and ft.regularize_epochs == 0):
            if state.data is None and (ft.epochs or ft.regularize_epochs):
                state.notes.append("no data was given: pruned without fine-tuning; accuracy was not measured")
            with state.stage("prune"):
                masks = MaskController(model.module, targets, self.cfg, 0, 1, state.spec.seed)
                masks.start()
                masks.finish()
            return PruneOutcome(FinetuneResult(), names)
        result = self._finetune(state, model, teacher, targets)
        gradual = "one-shot masks at the final sparsity (fine-tuning pruned gradually)"
        note = gradual if self.cfg.schedule.kind == "gradual" else ""
        return PruneOutcome(result, names, pruned=self.pruned_val, pruned_note=note)

    def _finetune(
        self, state: JobState, model: LoadedModel, teacher: Measurement, targets: list[PruneTarget]
    ) -> FinetuneResult:
        assert state.data is not None
        ft = self._batch_spec(state, model)
        if state.data.features:
            state.notes.append("fine-tuned toward the original's mean-pooled outputs (MSE distillation)")
        elif not state.data.labelled and ft.regularizers.distillation is None:
            state.notes.append("unlabelled data: fine-tuned by distillation from the original model only")
        inp = PhaseInputs(
            model=model,
            data=state.data,
            targets=targets,
            cfg=self.cfg,
            teacher_train_logits=teacher.train_logits,
            teacher_val_logits=teacher.val_logits,
            device=state.device,
            seed=state.spec.seed,
            eval_batch_size=state.spec.evaluation.batch_size,
            teacher_module=state.teacher,
        )
        total = ft.regularize_epochs + ft.epochs
        first = FinetuneResult()
        with state.stage("finetune"):
            if ft.regularize_epochs:
                first = regularize_phase(inp, ft, lambda r, _: report_epoch(state, r, r.epoch / total))
                state.notes.append(f"regularize-then-prune: {ft.regularize_epochs} regularized epochs before pruning")
            done = ft.regularize_epochs
            self.pruned_val = oneshot_val(state, model, targets, self.cfg)  # one validation pass, weights restored
            result = prune_and_recover(
                inp, recovery_spec(ft), lambda r, _: report_epoch(state, r, (done + r.epoch) / total)
            )
        result.history = renumber(first.history, result.history)
        state.notes.extend([*first.notes, *result.notes])
        return result

    @staticmethod
    def _batch_spec(state: JobState, model: LoadedModel) -> FinetuneSpec:
        """The fine-tuning spec, with the batch size an exported program's static shape forces."""
        ft = state.spec.finetune
        if model.fixed_batch_size and ft.batch_size != model.fixed_batch_size:
            state.notes.append(
                f"the exported program has a static batch size: trained with batches of {model.fixed_batch_size}"
            )
            ft = ft.model_copy(update={"batch_size": model.fixed_batch_size})
        return ft


def _trace_input(state: JobState, model: LoadedModel) -> ModelInputs | None:
    """The job's sample, batched as the model runs it, on the model's device: traced to find the classifier."""
    sample = job_inputs(state)
    return inputs_to(batch_of(sample, model.fixed_batch_size or 1), state.device) if sample else None
