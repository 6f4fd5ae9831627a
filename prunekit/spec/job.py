"""The job spec: what to prune, how to fine-tune, which gates to hold. Defined once, torch-free."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prunekit.spec.pruning import LatencyRuntime, MagnitudePruning, PruningSpec, Sparsity
from prunekit.spec.quantization import QuantizationSpec
from prunekit.spec.training import FinetuneSpec, RegularizersSpec

SPEC_VERSION: Literal[1] = 1
ScheduleKind = Literal["oneshot", "gradual"]
_ARCH_RE = re.compile(r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


InputDType = Literal["float32", "float16", "bfloat16", "int64", "int32", "bool"]
_INT_DTYPES = ("int64", "int32")


class InputSpec(_Strict):
    """One named model input: its dtype and one sample's shape (without the batch dimension)."""

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=64,
        description="The forward argument's name, e.g. input_ids, attention_mask, token_type_ids, pixel_values. "
        "Inputs are passed by name where the model's forward takes these names, else positionally in this order.",
    )
    shape: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=1, max_length=6, description="One sample's shape without the batch dimension, e.g. [128]."
    )
    dtype: InputDType = "float32"
    low: int | None = Field(None, description="Integer inputs without data: random values from [low, high); default 0.")
    high: int | None = Field(
        None, description="Integer inputs without data: exclusive upper bound, e.g. the vocabulary size; default 2."
    )

    @model_validator(mode="after")
    def _range(self) -> InputSpec:
        if (self.low is not None or self.high is not None) and self.dtype not in _INT_DTYPES:
            raise ValueError(f"input '{self.name}': low/high apply to int64/int32 inputs only")
        if self.high is not None and self.high <= (self.low or 0):
            raise ValueError(f"input '{self.name}': high must be greater than low")
        return self


ModelTask = Literal["auto", "causal_lm", "sequence_classification", "image_classification", "feature_extraction"]


class ModelSpec(_Strict):
    """How to read the uploaded model."""

    format: Literal["auto", "torchscript", "export", "state_dict", "huggingface"] = Field(
        "auto",
        description="auto detects the format from the file's content, never from its name; huggingface is a "
        ".tar, .tar.gz or .zip of a save_pretrained folder.",
    )
    task: ModelTask = Field(
        "auto",
        description="Hugging Face checkpoints: which AutoModelFor<Task> class to build; auto reads "
        "config.architectures. Other formats: causal_lm evaluates perplexity on token-id data, "
        "feature_extraction compares outputs with the original; auto means classification.",
    )
    architecture: str | None = Field(
        None,
        description="Required for state-dicts: 'torchvision/<name>', 'timm/<name>' or "
        "'<entry-point group name>/<name>' registered under the 'prunekit.architectures' entry-point group.",
        examples=["torchvision/resnet18", "timm/resnet18", "prunekit/digits_cnn"],
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the architecture.")
    input_shape: list[Annotated[int, Field(ge=1)]] | None = Field(
        None,
        min_length=1,
        max_length=6,
        description="One sample's shape without the batch dimension, e.g. [3, 224, 224]. "
        "Needed for latency and FLOPs when no data is given. Shorthand for one float32 input; see inputs.",
    )
    inputs: list[InputSpec] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="The model's inputs with names and dtypes, e.g. token ids (int64) and an attention mask, "
        "for models that take more than one tensor or take integers. Give this or input_shape, not both.",
    )

    @model_validator(mode="after")
    def _one_input_form(self) -> ModelSpec:
        if self.inputs is not None and self.input_shape is not None:
            raise ValueError("give model.inputs or model.input_shape, not both")
        names = [i.name for i in self.inputs or []]
        if len(set(names)) != len(names):
            raise ValueError(f"model.inputs names must be unique, got {names}")
        return self

    def input_specs(self) -> list[InputSpec] | None:
        """The declared inputs: `inputs`, or one float32 input 'x' from `input_shape`; None if neither is set."""
        if self.inputs is not None:
            return list(self.inputs)
        if self.input_shape is not None:
            return [InputSpec(name="x", shape=list(self.input_shape))]
        return None

    @field_validator("architecture")
    @classmethod
    def _arch_form(cls, v: str | None) -> str | None:
        if v is not None and not _ARCH_RE.match(v):
            raise ValueError("architecture must look like 'namespace/name', e.g. 'torchvision/resnet18'")
        return v


class OutputSpec(_Strict):
    format: Literal["same", "torchscript", "export", "state_dict", "huggingface", "sparse_state_dict"] = Field(
        "same",
        description="same keeps the input's format; state-dict inputs may be written as torchscript or export. "
        "sparse_state_dict (mask methods): a .safetensors of only the surviving weights (bitmask + values), "
        "restored dense with the plain-torch loader in the README, into the architecture or the uploaded model.",
    )
    also_onnx: bool = Field(False, description="Also export ONNX, checked against PyTorch with onnxruntime.")


class DataSpec(_Strict):
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Used when the dataset has no x_val/y_val.")
    split_seed: int = 0
    max_train_samples: int | None = Field(None, ge=1)
    seq_len: int = Field(
        128, ge=2, le=1_048_576, description="Text data: tokens per sample; causal-LM text is packed into blocks."
    )
    text_field: str = Field("text", min_length=1, max_length=64, description="Text data: the field with the text.")
    label_field: str = Field("label", min_length=1, max_length=64, description="Text data: the class label's field.")
    too_long: Literal["truncate", "refuse"] = Field(
        "truncate",
        description="Text classification: a text longer than seq_len tokens is cut (with a note) or refused.",
    )
    calibration_samples: int = Field(
        128,
        ge=1,
        le=100_000,
        description="wanda / sparsegpt: the first this many training rows (after the seeded split, i.e. a seeded "
        "sample when the data has no x_val) are the calibration inputs; all of them when there are fewer.",
    )
    input_field: str = Field(
        "x", min_length=1, max_length=64, description="Parquet data: the column with each row's input numbers."
    )
    image_size: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="Image folders: [height, width] each image is resized to (default: the model's input shape, "
        "the checkpoint's preprocessor_config.json, else the images' own size).",
    )
    channels: Literal[1, 3] | None = Field(
        None, description="Image folders: 1 (grayscale) or 3 (RGB); default: the model's input shape, else 3."
    )
    mean: list[float] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="Image folders: per-channel mean subtracted after scaling pixels to [0, 1] (default: the "
        "checkpoint's preprocessor_config.json, else none).",
    )
    std: list[Annotated[float, Field(gt=0)]] | None = Field(
        None, min_length=1, max_length=3, description="Image folders: per-channel std divided by, after the mean."
    )


class LatencySpec(_Strict):
    batch_size: int = Field(1, ge=1, le=4096)
    repeats: int = Field(30, ge=3, le=10_000)
    warmup: int = Field(5, ge=0, le=1000)
    threads: int | None = Field(None, ge=1, le=256, description="CPU threads while timing (default: torch's).")
    confidence: float = Field(
        0.95,
        ge=0.5,
        le=0.999,
        description="Coverage of the intervals stated for the median latency and speedup; a latency or speedup gate "
        "whose interval straddles its threshold is 'inconclusive'.",
    )


class EvaluationSpec(_Strict):
    batch_size: int = Field(256, ge=1, le=65_536)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    runtimes: list[LatencyRuntime] = Field(
        default_factory=lambda: list[LatencyRuntime](["pytorch"]),
        min_length=1,
        description="Runtimes the original and the artifact are timed on (pytorch always is); onnxruntime is added "
        "when output.also_onnx, gates.runtime or pruning.target_speedup_runtime asks for it.",
    )


class GatesSpec(_Strict):
    """Quality gates; a missed gate does not fail the job, it marks it as gate-missed."""

    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="Validation top-1 accuracy drop allowed, as a fraction (0.02 = 2 points)."
    )
    min_sparsity: Sparsity | None = Field(None, description="Minimum global sparsity on prunable layers.")
    max_latency_ms: float | None = Field(None, gt=0)
    max_artifact_bytes: int | None = Field(None, gt=0)
    min_speedup: float | None = Field(None, gt=0, description="Latency before / latency after.")
    max_generalization_gap: float | None = Field(
        None, ge=0, le=1, description="Train minus validation accuracy after compression, as a fraction."
    )
    max_perplexity_increase: float | None = Field(
        None, ge=0, description="Causal LMs: validation perplexity after / before - 1 allowed (0.1 = 10% higher)."
    )
    runtime: LatencyRuntime = Field(
        "pytorch", description="Where max_latency_ms and min_speedup are measured: the artifact in PyTorch, or ONNX."
    )


class SweepSpec(_Strict):
    """Grid of trials: sparsities x regularizers x schedules."""

    sparsities: list[Sparsity] = Field(min_length=1, max_length=50)
    regularizers: dict[str, RegularizersSpec] = Field(
        default_factory=lambda: {"none": RegularizersSpec()},
        min_length=1,
        max_length=20,
        description="Named regularizer settings to compare.",
    )
    schedules: list[ScheduleKind] = Field(default_factory=lambda: list[ScheduleKind](["oneshot"]), min_length=1)
    seeds: int = Field(
        1,
        ge=1,
        le=10,
        description="Trials per grid point, with seeds seed, seed + 1, ...; from 2 on the report gives each "
        "point's mean and 95% interval and says whether the best point's lead is more than noise.",
    )


class SensitivitySpec(_Strict):
    levels: list[Sparsity] = Field(default_factory=lambda: [0.3, 0.5, 0.7, 0.9], min_length=1, max_length=20)
    target_sparsity: Sparsity | None = Field(None, description="Recommend per-layer sparsities for this target.")
    max_layers: int = Field(200, ge=1)


class SearchSpec(_Strict):
    objective: Literal["max_sparsity"] = "max_sparsity"
    tolerance: float = Field(0.01, ge=0, le=1, description="Largest accuracy drop accepted, as a fraction.")
    low: Sparsity = 0.0
    high: Sparsity = 0.99
    max_trials: int = Field(8, ge=1, le=50)
    resolution: float = Field(0.01, gt=0, lt=1)


class JobSpec(_Strict):
    """A compression job: model, pruning, fine-tuning, evaluation and gates."""

    version: Literal[1] = SPEC_VERSION
    kind: Literal["compress", "sensitivity", "sweep", "search", "dry_run"] = Field(
        "compress",
        description="dry_run: a pre-flight check in seconds, without pruning or fine-tuning: it loads the model "
        "and data, runs one forward pass, plans the requested pruning and reports report.dry_run (no artifact).",
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    pruning: PruningSpec = Field(default_factory=MagnitudePruning)
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    quantization: QuantizationSpec | None = Field(
        None, description="Compress jobs: quantize after pruning and fine-tuning; the quantized artifact is delivered."
    )
    sweep: SweepSpec | None = None
    sensitivity: SensitivitySpec | None = None
    search: SearchSpec | None = None
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    device_memory_gib: float | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="Compress jobs: the device memory the model may fill (default: 90% of the GPU's free memory; "
        "unlimited on CPU). A model whose weights, twice over (it and its unpruned original), exceed it runs with "
        "its blocks (transformer layers) in host memory, each copied to the device for its own forward: one-shot "
        "pruning (magnitude, random, wanda, sparsegpt) and evaluation only, no fine-tuning or quantization.",
    )
    queue: Literal["auto", "cpu", "gpu"] = Field("auto", description="Service only: which worker pool runs the job.")

    @model_validator(mode="before")
    @classmethod
    def _default_method(cls, data: Any) -> Any:
        # `method` selects the config class; a spec that omits it means the default, magnitude.
        if isinstance(data, dict) and isinstance(data.get("pruning"), dict) and "method" not in data["pruning"]:
            data = {**data, "pruning": {**data["pruning"], "method": "magnitude"}}
        return data

    @model_validator(mode="after")
    def _kind_sections(self) -> JobSpec:
        needed = {"sweep": self.sweep, "sensitivity": self.sensitivity, "search": self.search}
        if self.kind in needed and needed[self.kind] is None:
            raise ValueError(f"kind '{self.kind}' needs a '{self.kind}' section")
        return self

    @model_validator(mode="after")
    def _calibrated_prunes_once(self) -> JobSpec:
        if self.pruning.method in ("wanda", "sparsegpt") and self.finetune.regularize_epochs:
            raise ValueError(
                f"{self.pruning.method} prunes once on calibration data before fine-tuning: "
                "finetune.regularize_epochs must be 0"
            )
        return self

    @model_validator(mode="after")
    def _quantization_fits(self) -> JobSpec:
        q = self.quantization
        if q is None:
            return self
        if self.kind not in ("compress", "dry_run"):
            raise ValueError(f"quantization is a stage of compress jobs, not of kind '{self.kind}'")
        if self.output.format == "sparse_state_dict":
            raise ValueError(
                "output.format 'sparse_state_dict' cannot be quantized: it stores the float weights that survive "
                "pruning; use another output.format with quantization"
            )
        timed = self.gates.max_latency_ms is not None or self.gates.min_speedup is not None
        if timed and self.gates.runtime != q.runtime:
            raise ValueError(
                f"quantization.method '{q.method}' delivers a model that runs on {q.runtime}: latency and speedup "
                f"gates must set gates.runtime '{q.runtime}' (the gates hold what is delivered)"
            )
        return self

    @model_validator(mode="after")
    def _architecture_for_state_dict(self) -> JobSpec:
        if self.model.format == "state_dict" and not self.model.architecture:
            raise ValueError("model.architecture is required when model.format is 'state_dict'")
        return self


def json_schema() -> dict[str, Any]:
    """The spec's JSON Schema (what `prunekit spec schema` prints)."""
    return JobSpec.model_json_schema()
