"""Structural strategy: remove channels physically, then recover by fine-tuning; rebuildable sidecar files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from prunekit.spec import FinetuneSpec, PruningSpec, StructuralPruning
from prunekit.spec.job import LatencySpec
from prunekit.spec.report import GateResult, Report, SplitMetrics, StructuralReport
from worker.engine.data import Dataset
from worker.engine.errors import InvalidSpecError, UnsupportedError
from worker.engine.evaluation.latency import SpeedupFn, interleaved_speedup
from worker.engine.job_state import JobState
from worker.engine.measure import Measurement
from worker.engine.models.architectures import build_architecture
from worker.engine.models.handle import LoadedModel
from worker.engine.models.outputs import output_tensors
from worker.engine.pruned_stage import val_split
from worker.engine.strategies.base import PruneOutcome, PruningStrategy, default_output_format, report_epoch
from worker.engine.structural import GradientFn, Widths, prune_structurally, rebuild_from_widths
from worker.engine.training.finetune import EpochCallback, FinetuneResult, TrainContext, finetune
from worker.engine.training.masking import NoMasks
from worker.engine.training.regularizers import RegularizedLoss

TAYLOR_BATCHES = 8
NOTHING_REMOVED = (
    "structural pruning removed nothing: every prunable layer is excluded, produces the model's outputs, or is "
    "coupled to a layer that must keep its channels (e.g. an excluded LSTM or loose parameter); the artifact is "
    "the original model, so the gate 'channels_removed' is missed"
)


class StructuralStrategy(PruningStrategy):
    """``method: structural``: a physically smaller model, with its widths in ``report.structural``."""

    def __init__(self, cfg: StructuralPruning) -> None:
        self.cfg = cfg
        self.section: StructuralReport | None = None  # set by prune, completed by write_sidecars
        self.notes: list[str] = []  # the job's notes (write_sidecars adds to them)
        self.sample: torch.Tensor | None = None
        self.pruned_val: SplitMetrics | None = None  # the 'pruned' stage: channels removed, before fine-tuning

    @classmethod
    def for_spec(cls, cfg: PruningSpec) -> StructuralStrategy:
        """The strategy of a structural config."""
        if not isinstance(cfg, StructuralPruning):
            raise InvalidSpecError(f"pruning method {cfg.method!r} is not structural")
        return cls(cfg)

    @property
    def target_sparsity(self) -> float:
        return self.cfg.channel_sparsity

    def output_format(self, model: LoadedModel, requested: str) -> str:
        """A state-dict input is saved as TorchScript: the architecture's own constructor builds full widths."""
        if model.format == "huggingface":
            # Smaller widths need a rewritten config.json: the transformer strategy does that, this one cannot.
            raise UnsupportedError(
                "method 'structural' removes channels from traced graphs and cannot rewrite a Hugging Face config; "
                "use method 'transformer_structural' (attention heads, MLP channels, hidden size, blocks) for "
                "checkpoints, or a mask method (magnitude, nm)"
            )
        if requested == "sparse_state_dict":
            raise UnsupportedError(
                "output.format 'sparse_state_dict' is for mask pruning; structural pruning already writes a "
                "smaller dense model: use 'same'"
            )
        if model.format == "state_dict" and requested in ("same", "state_dict"):
            # A dense smaller model needs a self-describing format; write_sidecars adds the state-dict and widths.
            return "torchscript"
        return default_output_format(model, requested)

    def prune(self, state: JobState, model: LoadedModel, teacher: Measurement) -> PruneOutcome:
        """Remove channels (stage 'prune'), then fine-tune the smaller model when there is data."""
        assert state.sample is not None
        with state.stage("prune", "removing channels"):
            result, self.section = remove_and_recover(
                model, self.cfg, state, teacher, lambda r, f: report_epoch(state, r, f), self._record_pruned
            )
        self.notes, self.sample = state.notes, state.sample
        state.notes.append(
            "structural pruning: channels removed physically; "
            f"MACs {self.section.macs_before} -> {self.section.macs_after}"
        )
        if removed_nothing(self.section):
            state.notes.append(NOTHING_REMOVED)
        # no parameter is a mask target: sparsity stats count none
        return PruneOutcome(result, [], pruned=self.pruned_val)

    def _record_pruned(self, state: JobState, model: LoadedModel) -> None:
        self.pruned_val = val_split(state, model)

    def write_sidecars(self, model: LoadedModel, out_dir: Path) -> None:
        """The state-dict and widths that rebuild the registered architecture (if the model has one)."""
        assert self.section is not None, "prune runs before write_sidecars"
        files = write_state_dict_sidecar(model, out_dir, self.section.widths)
        problem = check_sidecar(model, self.section.widths, self.sample) if files else None
        if problem:
            for name in files:
                (out_dir / name).unlink(missing_ok=True)
            files = []
            self.notes.append(f"no state-dict sidecar: the architecture rebuilt from the widths {problem}")
        self.section.sidecar_files = files

    def fill_report(self, report: Report) -> None:
        """The structural section; a job that removed nothing misses the gate 'channels_removed'."""
        report.structural = self.section
        if self.section is not None and removed_nothing(self.section):
            report.gates.append(
                GateResult(
                    name="channels_removed",
                    value=0.0,
                    threshold=self.cfg.channel_sparsity,
                    comparison=">=",
                    passed=False,
                    reason="no channel was removed (value: share of parameters removed)",
                )
            )
            report.status = "gate_missed"


def removed_nothing(section: StructuralReport) -> bool:
    """No layer changed width: the model is as large as before."""
    return not section.widths and section.params_after >= section.params_before


def check_sidecar(model: LoadedModel, widths: Widths, sample: torch.Tensor | None) -> str | None:
    """Why the sidecar cannot rebuild the pruned model (its architecture, resized, loading the state dict), or None."""
    assert model.architecture is not None
    try:
        rebuilt = rebuild_from_widths(lambda: build_architecture(model.architecture or "", model.arch_kwargs), widths)
        rebuilt.load_state_dict(model.module.state_dict(), strict=True)
        if sample is None:
            return None
        device = next(model.module.parameters()).device
        with torch.no_grad():
            got = output_tensors(rebuilt.to(device).eval()(sample.to(device)))
            want = output_tensors(model.module.eval()(sample.to(device)))
        same = len(got) == len(want) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want, strict=True))
    except Exception as exc:  # any failure means the sidecar would not work for the user either
        return f"fails: {type(exc).__name__}: {str(exc)[:200]}"
    return None if same else "gives different outputs"


def gradient_fn(data: Dataset, batch_size: int, device: torch.device) -> GradientFn:
    """Forward+backward over a few labelled batches, for gradient-based importance (first-order Taylor)."""

    def run(module: torch.nn.Module) -> None:
        x, y = data.x_train, data.y_train
        if y is None:
            return
        for start in range(0, min(len(x), TAYLOR_BATCHES * batch_size), batch_size):
            out = module(x[start : start + batch_size].to(device))
            torch.nn.functional.cross_entropy(out, y[start : start + batch_size].to(device)).backward()

    return run


def remove_and_recover(
    model: LoadedModel,
    cfg: StructuralPruning,
    state: JobState,
    teacher: Measurement,
    on_epoch: EpochCallback,
    on_pruned: Callable[[JobState, LoadedModel], None] | None = None,
) -> tuple[FinetuneResult, StructuralReport]:
    """Replace model.module by its structurally pruned copy, then fine-tune it (without data: no epochs)."""
    assert state.sample is not None
    device, data = state.device, state.data
    ft = state.spec.finetune if data is not None else state.spec.finetune.model_copy(update={"epochs": 0})
    data_fn = gradient_fn(data, ft.batch_size, device) if data is not None and data.labelled else None
    pruned = prune_structurally(
        model.module,
        cfg,
        state.sample.to(device),
        data_fn,
        speedup_fn=_speedup_fn(cfg, state.sample, state.spec.evaluation.latency, device),
    )
    model.module = pruned.module.to(device)
    section = StructuralReport.model_validate(pruned.to_dict())
    if data is None or ft.epochs == 0:
        return FinetuneResult(), section
    if on_pruned is not None:
        on_pruned(state, model)  # the 'pruned' stage, before fine-tuning recovers it
    return _recover(model, data, state, teacher, ft, on_epoch), section


def _speedup_fn(cfg: StructuralPruning, sample: torch.Tensor, latency: LatencySpec, device: torch.device) -> SpeedupFn:
    """How target_speedup is measured: in PyTorch, or both models exported to ONNX Runtime."""
    if cfg.target_speedup_runtime == "onnxruntime":
        from worker.engine.evaluation.onnx_latency import onnx_interleaved_speedup

        return onnx_interleaved_speedup(sample, latency, device)
    return interleaved_speedup(sample, latency, device)


def _recover(
    model: LoadedModel, data: Dataset, state: JobState, teacher: Measurement, ft: FinetuneSpec, on_epoch: EpochCallback
) -> FinetuneResult:
    # Nothing is masked: the removed channels are gone, so fine-tuning only recovers accuracy.
    loss = RegularizedLoss(ft.regularizers, [], [], data.labelled)
    ctx = TrainContext(
        model=model,
        data=data,
        masks=NoMasks(),
        loss=loss,
        teacher_train_logits=teacher.train_logits if loss.needs_teacher else None,
        teacher_val_logits=teacher.val_logits if loss.needs_teacher else None,
        device=state.device,
        amp=state.device.type == "cuda",
        seed=state.spec.seed,
        eval_batch_size=state.spec.evaluation.batch_size,
    )
    return finetune(ctx, ft, on_epoch)


def write_state_dict_sidecar(model: LoadedModel, out_dir: Path, widths: Widths) -> list[str]:
    """A state-dict plus the new layer widths, from which the registered architecture can be rebuilt."""
    if model.architecture is None:
        return []
    weights = out_dir / "model.state.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}, str(weights))
    meta = out_dir / "model.widths.json"
    meta.write_text(
        json.dumps({"architecture": model.architecture, "kwargs": model.arch_kwargs, "widths": widths}, indent=2)
    )
    return [weights.name, meta.name]
