"""Wanda and SparseGPT as a mask strategy: a calibrated pass on the job's data chooses the masks (and SparseGPT's
updated weights) once; fine-tuning, gates and the report then run as for every mask method."""

from __future__ import annotations

from prunekit.spec import PruningSpec
from prunekit.spec.pruning import CalibratedPruningSpec, SparseGPTPruning, WandaPruning
from worker.engine.errors import InvalidSpecError
from worker.engine.job_state import JobState
from worker.engine.measure import Measurement
from worker.engine.models.calling import num_rows, rows
from worker.engine.models.handle import LoadedModel
from worker.engine.pruning import PruneTarget
from worker.engine.pruning.calibrated import Calibration, calibrate, with_masks
from worker.engine.strategies.base import PruneOutcome
from worker.engine.strategies.mask import MaskStrategy


class CalibratedStrategy(MaskStrategy):
    """Masks from a layer-by-layer pass over ``data.calibration_samples`` training rows."""

    cfg: CalibratedPruningSpec

    @classmethod
    def for_spec(cls, cfg: PruningSpec) -> CalibratedStrategy:
        """The strategy of a wanda or sparsegpt config."""
        if not isinstance(cfg, WandaPruning | SparseGPTPruning):
            raise InvalidSpecError(f"pruning method {cfg.method!r} is not calibrated")
        return cls(cfg)

    def _prune(
        self, state: JobState, model: LoadedModel, teacher: Measurement, targets: list[PruneTarget]
    ) -> PruneOutcome:
        """Calibrate (in the prune stage), then enforce the masks and fine-tune like any mask method."""
        if state.data is None:
            raise InvalidSpecError(
                f"{self.cfg.method} needs calibration data: give a dataset; its first data.calibration_samples "
                "training rows are run through the model to choose the weights to prune"
            )
        train = state.data.train_inputs()
        count = min(state.spec.data.calibration_samples, num_rows(train))
        cal = Calibration(
            module=model.module,
            inputs=rows(train, slice(0, count)),
            device=state.device,
            batch_size=model.fixed_batch_size or min(state.spec.evaluation.batch_size, count),
            on_progress=lambda fraction, message: state.progress.update("prune", fraction * 0.9, message),
        )
        with state.stage("prune", f"{self.cfg.method}: calibrating on {count} rows"):
            result = calibrate(cal, targets, self.cfg)
        seconds = state.stage_seconds.pop("prune", 0.0)
        state.notes.append(f"{self.cfg.method}: calibrated on {count} training rows (data.calibration_samples)")
        state.notes.extend(result.notes)
        outcome = super()._prune(state, model, teacher, with_masks(targets, result.keep))
        state.stage_seconds["prune"] = round(seconds + state.stage_seconds.get("prune", 0.0), 4)
        return outcome
