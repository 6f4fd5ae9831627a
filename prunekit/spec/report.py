"""The report a job produces (`report.json`), versioned. Torch-free so the API and client can read it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

REPORT_VERSION: Literal[1] = 1


class SplitMetrics(BaseModel):
    accuracy: float | None = Field(None, description="Top-1 accuracy as a fraction; null when not measured.")
    loss: float | None = None
    samples: int = 0


class PhaseMetrics(BaseModel):
    """Metrics of one model (original or compressed) on the job's data."""

    train: SplitMetrics = Field(default_factory=SplitMetrics)
    val: SplitMetrics = Field(default_factory=SplitMetrics)
    gap: float | None = Field(None, description="train accuracy - val accuracy (the overfitting picture).")


class Fidelity(BaseModel):
    """Agreement of the compressed model with the original on the same inputs."""

    split: str
    top1_agreement: float
    kl_divergence: float = Field(description="Mean KL(original || compressed) of softmax outputs, in nats.")
    samples: int


class LayerSparsity(BaseModel):
    name: str
    shape: list[int]
    params: int
    zeros: int
    sparsity: float
    pruned: bool = Field(description="Whether this parameter was a pruning target.")


class NotPrunable(BaseModel):
    """A weight tensor that was not pruned although it is not a norm weight or bias, and why."""

    name: str
    shape: list[int]
    reason: str


class SparsityStats(BaseModel):
    global_sparsity: float = Field(description="Zeros / params over pruning targets only.")
    overall_sparsity: float = Field(description="Zeros / params over all parameters.")
    target_sparsity: float | None = None
    layers: list[LayerSparsity] = Field(
        default_factory=list, description="One row per tensor: tied (shared) parameters appear and count once."
    )
    high_sparsity_threshold: float = Field(0.95, description="Pruned layers at or above this sparsity are flagged.")
    high_sparsity_layers: list[str] = Field(
        default_factory=list, description="Pruning targets at or above high_sparsity_threshold."
    )
    empty_layers: list[str] = Field(default_factory=list, description="Pruning targets with every weight zero.")
    tied: dict[str, list[str]] = Field(
        default_factory=dict, description="Parameter -> other names sharing its storage (counted once, pruned once)."
    )
    classifier: list[str] = Field(
        default_factory=list, description="Parameters of the layers producing the model's outputs."
    )
    classifier_source: str = Field("", description="How the classifier was found: 'graph' or a fallback and why.")
    not_prunable: list[NotPrunable] = Field(
        default_factory=list, description="Weight tensors no method can prune here (e.g. loose parameters), why."
    )


class SizeStats(BaseModel):
    params_total: int
    params_nonzero: int
    flops_dense: int | None = Field(None, description="Multiply-accumulates x2 of the dense architecture, per sample.")
    flops_effective: int | None = Field(
        None, description="FLOPs counting only nonzero weights (what sparse kernels could reach; not a speedup)."
    )
    flops_method: str = Field("", description="How FLOPs were obtained (measured by a counter, or estimated).")
    artifact_bytes: int | None = None
    artifact_zipped_bytes: int | None = Field(None, description="Artifact compressed with zlib level 9.")


class LatencyStats(BaseModel):
    median_ms: float
    p90_ms: float
    p25_ms: float | None = None
    p75_ms: float | None = None
    batch_size: int
    repeats: int
    device: str
    threads: int | None = None
    runtime: str | None = Field(None, description="The format timed: torchscript, export or eager (state_dict).")


class SpeedupStats(BaseModel):
    """before / after latency from interleaved rounds: the median ratio and the middle half of the ratios."""

    median: float | None
    low: float | None = Field(description="25th percentile of the per-round ratios.")
    high: float | None = Field(description="75th percentile of the per-round ratios.")
    rounds: int
    within_noise: bool = Field(description="The spread contains 1.0: no speedup or slowdown can be claimed.")
    basis: str = Field(description="What was compared, e.g. 'torchscript vs torchscript'.")


class EpochRecord(BaseModel):
    epoch: int
    phase: Literal["regularize", "finetune"] = "finetune"
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    sparsity: float
    lr: float | None = None
    seconds: float


class GateResult(BaseModel):
    name: str
    value: float | None
    threshold: float
    comparison: Literal["<=", ">="]
    passed: bool
    reason: str = Field("", description="Why a gate could not be evaluated (counts as failed).")


class Isolation(BaseModel):
    child_process: bool
    rlimits: dict[str, int | None] = Field(default_factory=dict)
    network: str = Field(description="'isolated' (own network namespace) or why not.")
    filesystem: str = Field(
        default="not recorded",
        description="'isolated: ...' (Landlock: only libraries, the job's inputs and its own folders) or why not.",
    )
    environment: str = Field(description="Which environment variables the child got.")
    notes: list[str] = Field(default_factory=list, description="Limits not applied, and why.")


class Environment(BaseModel):
    prunekit: str
    torch: str
    torchvision: str | None = None
    python: str
    platform: str
    device: str
    device_name: str | None = None
    mixed_precision: bool = False
    threads: int


class Trial(BaseModel):
    """One point of a sweep or search."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    sparsity: float
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    gap: float | None = None
    accuracy_drop: float | None = None
    latency_ms: float | None = None
    artifact_bytes: int | None = None
    pareto: bool = False


class MetricInterval(BaseModel):
    """One metric of a sweep grid point over its seeds: the mean and a 95% Student-t interval."""

    mean: float | None = Field(None, description="Mean over the seeds that measured it; null when none did.")
    low: float | None = Field(None, description="Lower end of the 95% interval; null with fewer than 2 values.")
    high: float | None = Field(None, description="Upper end of the 95% interval; null with fewer than 2 values.")
    n: int = Field(0, description="How many seeds measured this metric.")


class SweepPoint(BaseModel):
    """One grid point of a sweep (sparsity x regularizers x schedule), aggregated over its seeds."""

    name: str = Field(description="The point's trial name without the seed, e.g. 's0.8-l2-oneshot'.")
    sparsity: float = Field(description="Target sparsity of the grid point.")
    regularizers: str
    schedule: str
    n: int = Field(description="Trials (seeds) that finished for this point.")
    trials: list[str] = Field(default_factory=list, description="Names of the trials aggregated here.")
    achieved_sparsity: float | None = Field(None, description="Mean global sparsity the trials reached.")
    val_accuracy: MetricInterval = Field(default_factory=MetricInterval)
    train_accuracy: MetricInterval = Field(default_factory=MetricInterval)
    val_loss: MetricInterval = Field(default_factory=MetricInterval)
    train_loss: MetricInterval = Field(default_factory=MetricInterval)
    gap: MetricInterval = Field(default_factory=MetricInterval, description="train - validation accuracy.")


class SweepRecommendation(BaseModel):
    """Which grid point to pick, and whether its lead over the next best is more than seed noise."""

    verdict: Literal["clear_winner", "within_noise", "point_estimate", "single_point"] = Field(
        description="clear_winner: the best point's 95% interval does not overlap the next best's; within_noise: "
        "it does; point_estimate: no interval (one seed), ranked on means only; single_point: nothing to compare."
    )
    metric: str = Field(description="The validation metric ranked, e.g. 'val_accuracy' (higher is better).")
    point: str = Field(description="Name of the grid point with the best mean.")
    sparsity: float
    regularizers: str
    schedule: str
    tied: list[str] = Field(
        default_factory=list, description="within_noise: the top points whose intervals overlap the best's."
    )
    message: str = Field(description="The recommendation in words (also in report.notes).")


class StructuralReport(BaseModel):
    """What structural pruning removed: new layer widths, MACs and parameters before and after."""

    widths: dict[str, dict[str, Any]] = Field(
        description="Module name -> new sizes (only layers whose sizes changed), e.g. {'conv1': {'out_channels': 8}}."
    )
    macs_before: int
    macs_after: int
    macs_reduction: float = Field(description="macs_before / macs_after.")
    params_before: int
    params_after: int
    seconds: float = Field(description="Wall time of channel removal (graph building, scoring, pruning, counting).")
    steps: int = Field(description="Pruning steps taken.")
    channel_ratio: float = Field(description="Share of channels removed per prunable layer.")
    latency_before: float | None = Field(None, description="Median seconds per forward pass; set by target_speedup.")
    latency_after: float | None = None
    sidecar_files: list[str] = Field(
        default_factory=list,
        description="Files beside the artifact that rebuild the registered architecture (state-dict + widths).",
    )


class Report(BaseModel):
    report_version: Literal[1] = REPORT_VERSION
    kind: str = "compress"
    status: Literal["passed", "gate_missed"] = "passed"
    spec: dict[str, Any]
    seed: int
    input_format: str
    output_format: str
    artifact_name: str | None = None
    data: dict[str, Any] = Field(default_factory=dict, description="What data there was and what was measured.")
    notes: list[str] = Field(default_factory=list, description="Caveats a reader must know (estimates, skips).")
    before: PhaseMetrics | None = Field(None, description="Null when no labelled data was given.")
    after: PhaseMetrics | None = None
    accuracy_drop: float | None = Field(None, description="val accuracy before - after, as a fraction.")
    fidelity: Fidelity | None = None
    sparsity: SparsityStats
    size_before: SizeStats
    size_after: SizeStats
    latency_before: LatencyStats | None = None
    latency_after: LatencyStats | None = None
    speedup: float | None = None
    speedup_stats: SpeedupStats | None = Field(
        None, description="The speedup's spread and basis (the original timed in the artifact's format)."
    )
    speedup_vs_input: SpeedupStats | None = Field(
        None, description="Only when the formats differ: the original as uploaded against the artifact."
    )
    history: list[EpochRecord] = Field(default_factory=list)
    gates: list[GateResult] = Field(default_factory=list)
    trials: list[Trial] = Field(default_factory=list)
    sweep_points: list[SweepPoint] = Field(default_factory=list, description="Sweeps: trials grouped by grid point.")
    sweep_recommendation: SweepRecommendation | None = None
    sensitivity: dict[str, Any] | None = None
    structural: StructuralReport | None = Field(None, description="Set by structural pruning only.")
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    environment: Environment
    isolation: Isolation | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def report_json_schema() -> dict[str, Any]:
    """JSON Schema of report.json (kept in docs/report.schema.json)."""
    return Report.model_json_schema()
