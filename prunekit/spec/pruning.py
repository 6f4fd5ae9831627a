"""Pruning configuration: one config class per method, joined in a discriminated union.

Adding a mask method means one config class here and one engine module registered under the same
``method`` name (see ``worker/engine/pruning/registry.py``); a method of another kind is one
``PruningStrategy`` module registered in ``worker/engine/strategies/registry.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Sparsity = Annotated[float, Field(ge=0.0, lt=1.0, description="Fraction of weights to remove, in [0, 1).")]
# Where latency is timed: the artifact's own PyTorch format, or ONNX Runtime (CPU; CUDA when the job runs on a GPU).
LatencyRuntime = Literal["pytorch", "onnxruntime"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScheduleSpec(_Strict):
    """When masks are computed: once before fine-tuning, or gradually during it (Zhu & Gupta 2017)."""

    kind: Literal["oneshot", "gradual"] = "oneshot"
    initial_sparsity: Sparsity = Field(0.0, description="Gradual only: sparsity at start_epoch.")
    start_epoch: int = Field(0, ge=0, description="Gradual only: epoch where pruning starts.")
    end_epoch: int | None = Field(
        None, ge=1, description="Gradual only: epoch where the target is reached (default: 2/3 of the epochs)."
    )
    frequency: int = Field(10, ge=1, description="Gradual only: recompute masks every this many optimizer steps.")


class _TargetSelection(_Strict):
    sparsity: Sparsity = 0.5
    include: list[str] = Field(
        default_factory=lambda: ["*"],
        description="fnmatch patterns on parameter names (e.g. 'features.*.weight'); a parameter must match one.",
    )
    exclude: list[str] = Field(default_factory=list, description="fnmatch patterns on parameter names to skip.")
    overrides: dict[str, Sparsity] = Field(
        default_factory=dict,
        description="Per-layer sparsity: fnmatch pattern on parameter or module name -> sparsity. "
        "Each pattern must match at least one prunable parameter.",
    )
    prune_normalization: bool = Field(False, description="Also prune normalization-layer weights (1-D).")
    prune_classifier: bool = Field(
        False,
        description="Also prune the final classifier: the layers whose outputs are the model's outputs, found by "
        "tracing a sample forward (the last 2-D weight where the model cannot be traced).",
    )
    prune_bias: bool = False
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)


DEFAULT_LAYER_CEILING = 0.95


class _GlobalScope(_TargetSelection):
    """Methods that can rank all layers together: a layer may not be emptied by the ranking unless asked."""

    scope: Literal["global", "layerwise"] = "global"
    max_layer_sparsity: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Global scope: no layer is pruned beyond this fraction; what it cannot take goes to the other "
        "layers. Default: max(0.95, (1 + sparsity) / 2), i.e. every layer keeps at least 5% of its weights and at "
        "least half the average share kept. 1.0 lets the ranking remove whole layers.",
    )

    def layer_ceiling(self) -> float:
        """The per-layer ceiling of a global ranking: the explicit value, or the default rule above."""
        if self.max_layer_sparsity is not None:
            return self.max_layer_sparsity
        return max(DEFAULT_LAYER_CEILING, (1.0 + self.sparsity) / 2)

    @model_validator(mode="after")
    def _ceiling_reaches_target(self) -> _GlobalScope:
        ceiling = self.max_layer_sparsity
        if self.scope == "global" and ceiling is not None and ceiling < self.sparsity:
            raise ValueError(
                f"max_layer_sparsity {ceiling} is below sparsity {self.sparsity}: no layer of the global ranking "
                "may exceed it, so the target cannot be reached (raise it; 1.0 allows removing whole layers)"
            )
        return self


class MagnitudePruning(_GlobalScope):
    """Unstructured: remove the smallest-magnitude weights, per layer or by one global threshold."""

    method: Literal["magnitude"] = "magnitude"
    scope: Literal["global", "layerwise"] = "global"


class RandomPruning(_GlobalScope):
    """Unstructured random pruning, a baseline to compare criteria against."""

    method: Literal["random"] = "random"
    scope: Literal["global", "layerwise"] = "layerwise"


class ChannelPruning(_TargetSelection):
    """Structured: zero whole output channels/filters with the smallest L1 or L2 norm (masking only)."""

    method: Literal["channel"] = "channel"
    norm: Literal["l1", "l2"] = "l1"


_STRICT_NM = Field(
    False,
    description="N:M: refuse layers whose input size is not divisible by m (default: leave them dense and list them "
    "in the report's sparsity.skipped_layers with their share of the weights).",
)


class NMPruning(_TargetSelection):
    """Semi-structured N:M: in every group of M consecutive input weights keep the N largest (e.g. 2:4)."""

    method: Literal["nm"] = "nm"
    n: int = Field(2, ge=1)
    m: int = Field(4, ge=2)
    sparsity: Sparsity = Field(0.5, description="Derived from n and m; any value given is replaced by 1 - n/m.")
    strict: bool = _STRICT_NM

    @model_validator(mode="after")
    def _derive_sparsity(self) -> NMPruning:
        if self.n >= self.m:
            raise ValueError("n must be smaller than m")
        self.sparsity = 1.0 - self.n / self.m
        return self


class _Calibrated(_TargetSelection):
    """One-shot methods that prune layer by layer on calibration data (``data.calibration_samples`` rows)."""

    pattern: Literal["unstructured", "n:m"] = Field(
        "unstructured",
        description="unstructured: the same share removed from every output row; n:m: n kept in every group of m "
        "consecutive inputs (e.g. 2:4).",
    )
    sparsity: Sparsity = Field(0.5, description="unstructured: removed from every output row; n:m: 1 - n/m.")
    n: int = Field(2, ge=1, description="pattern n:m: weights kept per group.")
    m: int = Field(4, ge=2, description="pattern n:m: group size along each output's inputs.")
    strict: bool = _STRICT_NM

    @model_validator(mode="after")
    def _oneshot_pattern(self) -> _Calibrated:
        if self.schedule.kind != "oneshot":
            raise ValueError("wanda and sparsegpt prune once on calibration data: schedule.kind must be 'oneshot'")
        if self.pattern == "n:m":
            if self.n >= self.m:
                raise ValueError("n must be smaller than m")
            self.sparsity = 1.0 - self.n / self.m
            odd = {p: s for p, s in self.overrides.items() if s not in (0.0, self.sparsity)}
            if odd:
                raise ValueError(f"n:m overrides can only be 0.0 (keep dense) or {self.sparsity}; got {odd}")
        return self


class WandaPruning(_Calibrated):
    """Wanda (Sun et al. 2023): remove the weights with the smallest |weight| x input norm in each output row."""

    method: Literal["wanda"] = "wanda"


class SparseGPTPruning(_Calibrated):
    """SparseGPT (Frantar & Alistarh 2023): prune by second-order scores and update the kept weights (OBS)."""

    method: Literal["sparsegpt"] = "sparsegpt"
    blocksize: int = Field(128, ge=1, le=65_536, description="Columns whose mask is chosen together.")
    percdamp: float = Field(0.01, gt=0.0, le=1.0, description="Hessian damping, as a share of its mean diagonal.")


class StructuralPruning(_Strict):
    """Physically remove channels and every layer coupled to them (dependency graph); eager models only."""

    method: Literal["structural"] = "structural"
    channel_sparsity: Sparsity = Field(0.5, description="Fraction of channels removed per prunable layer.")
    target_macs_reduction: float | None = Field(
        None, gt=1.0, description="Instead of a ratio: prune until MACs are divided by this factor (e.g. 2.0)."
    )
    target_speedup: float | None = Field(
        None, gt=1.0, description="Instead of a ratio: prune until measured latency is divided by this factor."
    )
    target_speedup_runtime: LatencyRuntime = Field(
        "pytorch", description="Where target_speedup is measured: the model in PyTorch, or exported to ONNX Runtime."
    )
    importance: Literal["magnitude", "taylor", "bn_scale"] = "magnitude"
    norm: Literal["l1", "l2"] = "l2"
    global_ranking: bool = False
    round_to: int | None = Field(None, ge=1, description="Keep channel counts multiples of this (hardware-friendly).")
    exclude: list[str] = Field(default_factory=list, description="fnmatch patterns on module names left unpruned.")
    prune_classifier: bool = False
    iterative_steps: int = Field(1, ge=1, le=100)

    @field_validator("target_speedup", "target_macs_reduction")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and v > 100:
            raise ValueError("targets above 100x are not supported")
        return v


Removed = Annotated[float, Field(ge=0.0, lt=1.0, description="Share removed, in [0, 1).")]


class TransformerStructuralPruning(_Strict):
    """Hugging Face transformers made smaller: attention heads, MLP channels, hidden size and whole blocks removed,
    the same widths in every layer so the rewritten config.json loads with plain ``from_pretrained``."""

    method: Literal["transformer_structural"] = "transformer_structural"
    attention_heads: Removed = Field(
        0.0,
        description="Share of attention heads removed in every layer, rounded to whole heads; the count kept must "
        "be legal for the config (whole key/value groups, or query heads within groups; see gqa).",
    )
    gqa: Literal["groups", "within_groups"] = Field(
        "groups",
        description="Grouped-query attention: remove whole key/value groups with their query heads, or query heads "
        "within every group (all key/value heads kept).",
    )
    mlp: Removed = Field(0.0, description="Share of MLP intermediate channels removed in every layer.")
    hidden_size: Removed = Field(
        0.0,
        description="Share of the hidden (embedding) size removed. GPT-2 and BERT tie it to heads x head size, so it "
        "must equal attention_heads there.",
    )
    layers: Removed = Field(0.0, description="Share of the decoder/encoder blocks removed (depth), rounded.")
    importance: Literal["activation", "magnitude"] = Field(
        "activation",
        description="activation: mean activation magnitude per head, channel and hidden dimension on "
        "data.calibration_samples training rows (Minitron); magnitude: weight norms (data-free). Blocks are ranked "
        "by how much they change their input (1 - cosine) either way.",
    )
    round_to: int | None = Field(None, ge=1, description="Keep MLP (and Llama hidden) sizes multiples of this.")
    target_params: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Instead of fixed ratios: keep at most this share of the parameters; the ratios given are the "
        "ceilings, scaled down together until the budget is met.",
    )
    target_speedup: float | None = Field(
        None,
        gt=1.0,
        le=100.0,
        description="Instead of fixed ratios: the smallest scaling of the ratios whose measured speedup reaches this.",
    )

    @model_validator(mode="after")
    def _one_budget(self) -> TransformerStructuralPruning:
        # All ratios 0 is valid here (defaults) and refused by the job's pre-flight check, which names the fields.
        if self.target_params is not None and self.target_speedup is not None:
            raise ValueError("give one budget: target_params or target_speedup, not both")
        return self


PruningSpec = Annotated[
    MagnitudePruning
    | RandomPruning
    | ChannelPruning
    | NMPruning
    | WandaPruning
    | SparseGPTPruning
    | StructuralPruning
    | TransformerStructuralPruning,
    Field(discriminator="method"),
]
MaskPruningSpec = MagnitudePruning | RandomPruning | ChannelPruning | NMPruning | WandaPruning | SparseGPTPruning
CalibratedPruningSpec = WandaPruning | SparseGPTPruning
