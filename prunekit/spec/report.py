"""The report a job produces (`report.json`), versioned. Torch-free so the API and client can read it."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

# 2: perplexity and tokens per split (causal LMs), output fidelity (cosine, relative error) for non-classifiers.
REPORT_VERSION: Literal[2] = 2


class SplitMetrics(BaseModel):
    accuracy: float | None = Field(None, description="Top-1 accuracy as a fraction; null when not measured.")
    loss: float | None = Field(None, description="Mean cross-entropy (per sample; per token for causal LMs).")
    samples: int = 0
    perplexity: float | None = Field(None, description="Causal LMs: exp(token-weighted mean next-token loss).")
    tokens: int | None = Field(None, description="Causal LMs: predicted tokens the loss is averaged over.")


class PhaseMetrics(BaseModel):
    """Metrics of one model (original or compressed) on the job's data."""

    train: SplitMetrics = Field(default_factory=SplitMetrics)
    val: SplitMetrics = Field(default_factory=SplitMetrics)
    gap: float | None = Field(None, description="train accuracy - val accuracy (the overfitting picture).")
    loss_gap: float | None = Field(None, description="val loss - train loss (causal LMs: the gap in nats per token).")


class Fidelity(BaseModel):
    """Agreement of the compressed model with the original on the same inputs."""

    split: str
    top1_agreement: float | None = Field(None, description="Classifiers: share of samples with the same top-1.")
    kl_divergence: float | None = Field(
        None, description="Classifiers: mean KL(original || compressed) of softmax outputs, in nats."
    )
    cosine_similarity: float | None = Field(
        None, description="Models without class outputs: mean cosine similarity of the (pooled) outputs."
    )
    relative_error: float | None = Field(
        None, description="Models without class outputs: ||after - before|| / ||before||."
    )
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


class SkippedLayer(BaseModel):
    """A pruning target left dense because it cannot hold the method's pattern (e.g. N:M), and why."""

    name: str
    shape: list[int]
    reason: str
    share: float = Field(description="Its weights as a fraction of all pruning targets' weights (skipped included).")


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
    skipped_layers: list[SkippedLayer] = Field(
        default_factory=list,
        description="Targets left dense because they cannot hold the pattern (N:M: input size not divisible by m).",
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
    runtime: str | None = Field(
        None, description="The format timed: torchscript, export or eager (state_dict); onnxruntime for ONNX Runtime."
    )
    ci_low_ms: float | None = Field(
        None, description="Lower end of the median's confidence interval (order statistics)."
    )
    ci_high_ms: float | None = Field(None, description="Upper end of the median's confidence interval.")
    confidence: float | None = Field(
        None, description="Coverage of [ci_low_ms, ci_high_ms] (0.95 asked; less with fewer than 6 repeats)."
    )
    sequence_length: int | None = Field(None, description="Token-id models: tokens per sequence timed.")
    tokens_per_s: float | None = Field(
        None, description="Token-id models: batch_size x sequence_length / median latency (all positions at once)."
    )


class SpeedupStats(BaseModel):
    """before / after latency from interleaved rounds: the median ratio and the middle half of the ratios."""

    median: float | None
    low: float | None = Field(description="25th percentile of the per-round ratios.")
    high: float | None = Field(description="75th percentile of the per-round ratios.")
    rounds: int
    within_noise: bool = Field(description="The spread contains 1.0: no speedup or slowdown can be claimed.")
    basis: str = Field(description="What was compared, e.g. 'torchscript vs torchscript'.")
    ci_low: float | None = Field(
        None, description="Lower end of the median ratio's confidence interval (order statistics of the rounds)."
    )
    ci_high: float | None = Field(None, description="Upper end of the median ratio's confidence interval.")
    confidence: float | None = Field(
        None, description="Coverage of [ci_low, ci_high] (0.95 asked; less with fewer than 6 rounds)."
    )
    runtime: str | None = Field(None, description="'pytorch' or 'onnxruntime': the runtime both sides ran on.")


class RuntimeLatency(BaseModel):
    """The original and the artifact timed interleaved on one runtime, and whether a speedup can exist there."""

    runtime: Literal["pytorch", "onnxruntime"]
    engine: str = Field(description="PyTorch: the format timed (torchscript, export, eager); ONNX Runtime: provider.")
    before: LatencyStats | None = None
    after: LatencyStats | None = None
    speedup: SpeedupStats | None = None
    speedup_possible: bool | None = Field(
        None, description="Whether the pruning method can make the model faster on this runtime (null: unknown)."
    )
    speedup_why: str = Field("", description="Why a speedup can or cannot exist on this runtime.")
    note: str = Field("", description="Why it was not measured, or what the numbers include.")


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


GateOutcome = Literal["passed", "failed", "inconclusive"]
ReportStatus = Literal["passed", "gate_missed", "inconclusive"]


class GateResult(BaseModel):
    name: str
    value: float | None
    threshold: float
    comparison: Literal["<=", ">="]
    passed: bool = Field(description="True only for the outcome 'passed'.")
    reason: str = Field(
        "", description="Why a gate could not be evaluated (counts as failed), or why it is inconclusive."
    )
    outcome: GateOutcome | None = Field(
        None,
        description="passed / failed; inconclusive: the value's confidence interval straddles the threshold, so "
        "timing noise decides (latency and speedup gates). Older reports: derived from passed.",
    )
    interval_low: float | None = Field(None, description="Latency and speedup gates: the value's interval.")
    interval_high: float | None = None
    confidence: float | None = Field(None, description="Coverage of [interval_low, interval_high].")
    runtime: str | None = Field(None, description="Latency and speedup gates: the runtime measured.")

    @model_validator(mode="after")
    def _derive_outcome(self) -> GateResult:
        if self.outcome is None:
            self.outcome = "passed" if self.passed else "failed"
        return self


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


class TransformerWidths(BaseModel):
    """The widths of a Hugging Face transformer, as its config.json states them (the same in every layer)."""

    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    hidden_size: int
    num_hidden_layers: int


class TransformerStructuralReport(BaseModel):
    """What transformer_structural removed (heads, MLP channels, hidden size, blocks) and how the model fared."""

    model_type: str = Field(description="config.model_type of the checkpoint, e.g. 'gpt2', 'llama', 'bert'.")
    widths_before: TransformerWidths
    widths_after: TransformerWidths = Field(description="As written to the artifact's config.json.")
    removed_layers: list[int] = Field(default_factory=list, description="Indices of the blocks removed (depth).")
    importance: str = Field(description="'activation' (calibration rows) or 'magnitude' (weight norms).")
    calibration_rows: int = Field(0, description="Training rows the importance (and block ranking) was measured on.")
    params_before: int
    params_after: int
    scale: float = Field(1.0, description="Budgets: the factor the requested ratios were scaled by (1: as given).")
    budget: str | None = Field(None, description="The budget searched for (target_params / target_speedup), if any.")
    budget_reached: bool | None = None
    measured_speedup: float | None = Field(
        None, description="target_speedup: the speedup measured for the chosen widths during the search."
    )
    after_pruning: SplitMetrics | None = Field(
        None, description="Validation metrics right after removal, before recovery (report.after: after recovery)."
    )
    recovery: str | None = Field(None, description="How the smaller model was recovered (distillation), if it was.")
    seconds: float = Field(description="Wall time of scoring and removal.")
    notes: list[str] = Field(default_factory=list)


StageName = Literal["dense", "pruned", "fine_tuned", "quantized"]


class StageRecord(BaseModel):
    """One stage of a compress job (dense -> pruned -> fine-tuned -> quantized), measured where it can be."""

    name: StageName
    val: SplitMetrics | None = Field(None, description="Validation metrics; null when not measured.")
    train: SplitMetrics | None = Field(None, description="Training metrics (not measured for 'pruned').")
    artifact: str | None = Field(None, description="The stage's file in the output folder, where one exists.")
    artifact_bytes: int | None = None
    params_total: int | None = None
    params_nonzero: int | None = None
    latency_ms: float | None = Field(None, description="Median latency per call, timed against the dense model.")
    runtime: str | None = Field(None, description="Where latency_ms was timed, e.g. 'torchscript', 'onnxruntime'.")
    delivered: bool = Field(False, description="This stage's artifact is the one delivered (and gated).")
    note: str = Field("", description="What the stage's numbers are, or why some are missing.")


class QuantizationReport(BaseModel):
    """What the quantization stage delivered and how to load it without prunekit."""

    method: str
    runtime: Literal["pytorch", "onnxruntime"] = Field(description="Where the delivered artifact runs.")
    artifact: str = Field(description="The delivered (quantized) file; also report.artifact_name.")
    unquantized_artifact: str | None = Field(None, description="The fine-tuned float artifact, when kept.")
    calibration_rows: int | None = Field(None, description="int8_static_onnx: training rows calibrated on.")
    load: str = Field(description="How to load the artifact with plain torch or onnxruntime.")
    seconds: float = Field(description="Wall time of quantizing and writing the artifact.")


class DryRunProblemCode(StrEnum):
    """What a dry run found that would make the full job fail (or do nothing useful)."""

    INVALID_DATA = "invalid_data"  # the dataset cannot be read
    MISSING_INPUTS = "missing_inputs"  # no data and no model.input_shape / model.inputs to build a sample from
    INPUT_MISMATCH = "input_mismatch"  # the data's sample shape differs from the declared inputs
    FORWARD_FAILED = "forward_failed"  # the model cannot run on the sample (shape or dtype it cannot take)
    OUTPUTS_MISMATCH = "outputs_mismatch"  # the outputs do not suit the task or the data's labels
    PRUNING_PLAN = "pruning_plan"  # the pruning section does not fit this model (nothing to prune, bad override)
    NEEDS_DATA = "needs_data"  # the method needs data the job does not have (calibration, taylor importance)
    STRUCTURAL_BLOCKED = "structural_blocked"  # structural pruning cannot run on this model
    OUTPUT_FORMAT = "output_format"  # output.format is not possible for this input
    DEVICE_MEMORY = "device_memory"  # the model does not fit the device memory for what the spec asks of it


class DryRunProblem(BaseModel):
    code: DryRunProblemCode
    message: str


class DryRunInput(BaseModel):
    """One model input of the sample the dry run ran, with its batch dimension."""

    name: str
    dtype: str
    shape: list[int]


class DryRunLayer(BaseModel):
    """A layer the requested pruning would prune: a parameter (mask methods) or a module (structural)."""

    name: str
    shape: list[int] = Field(description="Weight shape before pruning.")
    params: int = Field(description="Parameters before pruning.")
    sparsity: float = Field(description="Planned share removed: the target's sparsity, or the structural share.")
    params_after: int = Field(
        description="Estimate: nonzero weights kept (mask methods) or parameters left after channel removal."
    )


class StructuralBlocker(BaseModel):
    """What keeps structural pruning from removing channels, and the ratios it would accept where known."""

    layer: str | None = Field(None, description="The layer the blocker is about, where one is named.")
    message: str
    legal_ratios: list[float] | None = Field(
        None,
        description="Channel ratios the layer can take, where known (e.g. a grouped or GQA attention layer's head "
        "constraints); null when any ratio works or it is not known.",
    )


class DryRunEstimate(BaseModel):
    """Sizes expected after the requested pruning. Estimates, not measurements of a pruned artifact."""

    params_before: int
    params_after: int = Field(
        description="Estimate: parameters after channel removal (structural), or nonzero parameters after masking "
        "at the targets' planned sparsities (mask methods keep every dense shape)."
    )
    macs_before: int | None = Field(
        None, description="Multiply-accumulates per sample, counted on the sample; null without a sample."
    )
    macs_after: int | None = Field(
        None,
        description="Estimate: MACs per sample after channel removal (structural, counted on a pruned copy), or "
        "the MACs a sparse kernel could skip to at the planned sparsities (mask methods; dense MACs do not change).",
    )
    file_bytes_before: int = Field(description="Size of the uploaded model file.")
    file_bytes_after: int | None = Field(
        None,
        description="Estimate: the input file's size scaled by the parameter ratio (structural, "
        "transformer_structural); mask methods store zeros densely, so the file keeps its size, except with output "
        "sparse_state_dict: the kept values plus their positions at the mask's entropy (an upper bound; deflate "
        "makes the file smaller still).",
    )
    method: str = Field("", description="How the estimates were obtained.")


class DryRunReport(BaseModel):
    """A pre-flight check of a job: what was detected, what would be pruned, what blocks it, what it would cost.

    Nothing is pruned or fine-tuned and no artifact is written; problems are collected, not raised.
    """

    format: str = Field(description="The detected model format (torchscript, export, state_dict, huggingface).")
    container: str = Field("", description="The file container read, e.g. 'safetensors' or 'torchscript zip'.")
    task: str = Field(description="How outputs are read: classification, causal_lm, feature_extraction, ...")
    architecture: str | None = None
    method: str = Field(description="The requested pruning method.")
    inputs: list[DryRunInput] = Field(default_factory=list, description="The sample the forward pass ran on.")
    inputs_source: str = Field("", description="Where the sample came from: data, spec, model config or program.")
    forward_ok: bool = Field(False, description="One forward pass on the sample succeeded.")
    prunable: list[DryRunLayer] = Field(default_factory=list)
    not_prunable: list[NotPrunable] = Field(
        default_factory=list, description="Weights left out of the plan, and why (mask methods)."
    )
    skipped_layers: list[SkippedLayer] = Field(
        default_factory=list, description="Targets that cannot hold the method's pattern (N:M), left dense."
    )
    classifier: list[str] = Field(default_factory=list, description="Parameters of the output layers (kept).")
    structural_blockers: list[StructuralBlocker] = Field(
        default_factory=list, description="Why structural pruning would be refused or remove nothing."
    )
    expected: DryRunEstimate | None = Field(
        None, description="Null when the pruning could not be planned (e.g. structural pruning refused)."
    )
    output_format: str | None = Field(None, description="The artifact format the full job would write.")
    output_formats: list[str] = Field(default_factory=list, description="Every output.format possible here.")
    runtimes: list[str] = Field(default_factory=list, description="Runtimes the possible formats deploy to.")
    problems: list[DryRunProblem] = Field(default_factory=list, description="What the full job would fail on.")
    seconds: float = Field(0.0, description="Wall time of the dry run.")


class Report(BaseModel):
    report_version: Literal[1, 2] = REPORT_VERSION
    kind: str = "compress"
    status: ReportStatus = Field(
        "passed",
        description="gate_missed: a gate failed; inconclusive: none failed, but a latency or speedup gate's "
        "interval straddles its threshold.",
    )
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
    runtimes: list[RuntimeLatency] = Field(
        default_factory=list, description="Latency per runtime (pytorch, onnxruntime) and whether a speedup can exist."
    )
    history: list[EpochRecord] = Field(default_factory=list)
    gates: list[GateResult] = Field(default_factory=list)
    trials: list[Trial] = Field(default_factory=list)
    sweep_points: list[SweepPoint] = Field(default_factory=list, description="Sweeps: trials grouped by grid point.")
    sweep_recommendation: SweepRecommendation | None = None
    sensitivity: dict[str, Any] | None = None
    structural: StructuralReport | None = Field(None, description="Set by structural pruning only.")
    transformer_structural: TransformerStructuralReport | None = Field(
        None, description="Set by transformer_structural pruning only."
    )
    dry_run: DryRunReport | None = Field(None, description="Set by kind dry_run only.")
    stages: list[StageRecord] = Field(
        default_factory=list,
        description="Compress jobs: dense, pruned, fine_tuned (and quantized) side by side; before/after and the "
        "gates are the dense and the delivered stage.",
    )
    quantization: QuantizationReport | None = Field(None, description="Set when the spec asks for quantization.")
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    environment: Environment
    isolation: Isolation | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def report_json_schema() -> dict[str, Any]:
    """JSON Schema of report.json (kept in docs/report.schema.json)."""
    return Report.model_json_schema()
