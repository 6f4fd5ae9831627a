"""Pruning configuration: one config class per method, joined in a discriminated union.

Adding a mask method means one config class here and one engine module registered under the same
``method`` name (see ``worker/engine/pruning/registry.py``); a method of another kind is one
``PruningStrategy`` module registered in ``worker/engine/strategies/registry.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Sparsity = Annotated[float, Field(ge=0.0, lt=1.0, description="Fraction of weights to remove, in [0, 1).")]


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


class NMPruning(_TargetSelection):
    """Semi-structured N:M: in every group of M consecutive input weights keep the N largest (e.g. 2:4)."""

    method: Literal["nm"] = "nm"
    n: int = Field(2, ge=1)
    m: int = Field(4, ge=2)
    sparsity: Sparsity = Field(0.5, description="Derived from n and m; any value given is replaced by 1 - n/m.")

    @model_validator(mode="after")
    def _derive_sparsity(self) -> NMPruning:
        if self.n >= self.m:
            raise ValueError("n must be smaller than m")
        self.sparsity = 1.0 - self.n / self.m
        return self


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


PruningSpec = Annotated[
    MagnitudePruning | RandomPruning | ChannelPruning | NMPruning | StructuralPruning,
    Field(discriminator="method"),
]
MaskPruningSpec = MagnitudePruning | RandomPruning | ChannelPruning | NMPruning
