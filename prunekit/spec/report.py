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


class SparsityStats(BaseModel):
    global_sparsity: float = Field(description="Zeros / params over pruning targets only.")
    overall_sparsity: float = Field(description="Zeros / params over all parameters.")
    target_sparsity: float | None = None
    layers: list[LayerSparsity] = Field(default_factory=list)


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
    batch_size: int
    repeats: int
    device: str
    threads: int | None = None


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
    gap: float | None = None
    accuracy_drop: float | None = None
    latency_ms: float | None = None
    artifact_bytes: int | None = None
    pareto: bool = False


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
    history: list[EpochRecord] = Field(default_factory=list)
    gates: list[GateResult] = Field(default_factory=list)
    trials: list[Trial] = Field(default_factory=list)
    sensitivity: dict[str, Any] | None = None
    structural: StructuralReport | None = Field(None, description="Set by structural pruning only.")
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    environment: Environment
    isolation: Isolation | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def report_json_schema() -> dict[str, Any]:
    """JSON Schema of report.json (kept in docs/report.schema.json)."""
    return Report.model_json_schema()
