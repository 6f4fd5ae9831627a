"""The interface every pruning strategy of a compress job implements, looked up by ``spec.pruning.method``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from prunekit.spec.report import EpochRecord, Report, SplitMetrics
from worker.engine.errors import InvalidSpecError
from worker.engine.job_state import JobState
from worker.engine.measure import Measurement
from worker.engine.models.handle import LoadedModel
from worker.engine.training.finetune import FinetuneResult


@dataclass
class PruneOutcome:
    """What the prune(+recover) phase leaves for the later stages."""

    result: FinetuneResult = field(default_factory=FinetuneResult)
    target_names: list[str] = field(default_factory=list)  # parameters the sparsity stats count as targets
    pruned: SplitMetrics | None = None  # validation metrics at the final sparsity/widths, before recovery
    pruned_note: str = ""  # what `pruned` is where it is not simply that


class PruningStrategy(ABC):
    """One way to prune a model, built per job from its pruning config.

    The pipeline calls, in order: ``output_format`` (load), ``prune`` (prune/finetune), ``write_sidecars`` (save,
    after the artifact) and ``fill_report`` (report). A strategy may keep what it learns between these calls.
    """

    @property
    @abstractmethod
    def target_sparsity(self) -> float:
        """The sparsity the spec asked for, as the report's ``sparsity.target_sparsity``."""

    def output_format(self, model: LoadedModel, requested: str) -> str:
        """The artifact format for ``output.format == requested``; by default what the input format allows."""
        return default_output_format(model, requested)

    @abstractmethod
    def prune(self, state: JobState, model: LoadedModel, teacher: Measurement) -> PruneOutcome:
        """Prune ``model`` in place (or replace ``model.module``) and recover it; stages are the strategy's own."""

    def write_sidecars(self, model: LoadedModel, out_dir: Path) -> None:
        """Write extra files beside the saved artifact (none by default)."""
        return None

    def fill_report(self, report: Report) -> None:
        """Set the strategy's own typed section of the report (none by default)."""
        return None


def default_output_format(model: LoadedModel, requested: str) -> str:
    """``same`` keeps the input's format; another format needs a state-dict input (only that can be re-saved)."""
    if requested == "same":
        return model.format
    if requested == "sparse_state_dict":
        return requested  # masks keep every shape, so the weights load back into any input's model
    if model.format != "state_dict" and requested != model.format:
        raise InvalidSpecError(
            f"output.format '{requested}' needs a state-dict input (the input is {model.format}); use 'same'"
        )
    return requested


def report_epoch(state: JobState, record: EpochRecord, fraction: float) -> None:
    """Progress of fine-tuning, with the epoch's metrics."""
    state.progress.update("finetune", fraction, f"epoch {record.epoch}", **record.model_dump())
