"""The job spec and report schemas, defined once with pydantic and importable without torch."""

from prunekit.spec.job import (
    DataSpec,
    EvaluationSpec,
    GatesSpec,
    JobSpec,
    ModelSpec,
    OutputSpec,
    SearchSpec,
    SensitivitySpec,
    SweepSpec,
    json_schema,
)
from prunekit.spec.loading import SpecError, load_spec, parse_spec
from prunekit.spec.pruning import (
    ChannelPruning,
    MagnitudePruning,
    MaskPruningSpec,
    NMPruning,
    PruningSpec,
    RandomPruning,
    ScheduleSpec,
    SparseGPTPruning,
    StructuralPruning,
    TransformerStructuralPruning,
    WandaPruning,
)
from prunekit.spec.report import Report
from prunekit.spec.training import DistillationSpec, FinetuneSpec, OptimizerSpec, RegularizersSpec

__all__ = [
    "ChannelPruning",
    "DataSpec",
    "DistillationSpec",
    "EvaluationSpec",
    "FinetuneSpec",
    "GatesSpec",
    "JobSpec",
    "MagnitudePruning",
    "MaskPruningSpec",
    "ModelSpec",
    "NMPruning",
    "OptimizerSpec",
    "OutputSpec",
    "PruningSpec",
    "RandomPruning",
    "RegularizersSpec",
    "Report",
    "ScheduleSpec",
    "SearchSpec",
    "SensitivitySpec",
    "SparseGPTPruning",
    "SpecError",
    "StructuralPruning",
    "SweepSpec",
    "TransformerStructuralPruning",
    "WandaPruning",
    "json_schema",
    "load_spec",
    "parse_spec",
]
