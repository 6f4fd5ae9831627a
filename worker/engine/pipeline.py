"""One compress job: load, measure, prune, fine-tune, re-measure the saved artifact, report."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prunekit.spec import JobSpec, MaskPruningSpec, ModelSpec, StructuralPruning
from prunekit.spec.report import (
    EpochRecord,
    Fidelity,
    LatencyStats,
    PhaseMetrics,
    Report,
    SizeStats,
    SparsityStats,
)
from worker.engine.data import Dataset, check_labels_fit, load_dataset
from worker.engine.environment import describe_environment, resolve_device
from worker.engine.errors import InvalidDataError, InvalidSpecError, UnsupportedError
from worker.engine.evaluation.flops import FLOPS_METHOD, count_flops
from worker.engine.evaluation.latency import measure_latencies
from worker.engine.evaluation.metrics import fidelity, predict_logits, split_metrics
from worker.engine.evaluation.sparsity import count_params, sparsity_stats
from worker.engine.gates import Measured, evaluate_gates
from worker.engine.models.handle import LoadedModel
from worker.engine.models.loading import load_model
from worker.engine.models.saving import save_model
from worker.engine.progress import StageProgress
from worker.engine.pruning import select_targets
from worker.engine.structural_compress import prune_and_recover as structural_prune_and_recover
from worker.engine.structural_compress import write_state_dict_sidecar
from worker.engine.training.finetune import FinetuneResult
from worker.engine.training.masking import MaskController
from worker.engine.training.phases import PhaseInputs, prune_and_recover, recovery_spec, regularize_phase, renumber


@dataclass
class Measurement:
    """Everything measured on one model (before or after)."""

    metrics: PhaseMetrics | None
    val_logits: torch.Tensor | None
    train_logits: torch.Tensor | None
    size: SizeStats
    latency: LatencyStats | None = None  # set by _time_both, which times before and after together


@dataclass
class JobState:
    spec: JobSpec
    model_path: Path
    out_dir: Path
    progress: StageProgress
    device: torch.device
    data: Dataset | None = None
    sample: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, message: str = "") -> Iterator[None]:
        self.progress.update(name, 0.0, message or name)
        started = time.perf_counter()
        yield
        self.stage_seconds[name] = round(time.perf_counter() - started, 4)
        self.progress.update(name, 1.0, f"{name} done")


def _example_sample(state: JobState, model: LoadedModel) -> torch.Tensor:
    """One input of shape [1, ...]: from the data, the spec's input_shape, or the exported program."""
    shape = state.spec.model.input_shape
    if state.data is not None:
        sample = state.data.x_val[:1].clone()
        if shape is not None and list(sample.shape[1:]) != list(shape):
            raise InvalidSpecError(
                f"model.input_shape {shape} does not match the data's sample shape {list(sample.shape[1:])}"
            )
        return sample
    if shape is not None:
        return torch.randn([1, *shape], generator=torch.Generator().manual_seed(state.spec.seed))
    ep = model.exported_program
    if ep is not None and ep.example_inputs is not None:
        args = ep.example_inputs[0]
        if args and isinstance(args[0], torch.Tensor):
            return args[0][:1].detach().clone().float()
    raise InvalidSpecError("model.input_shape is required when no data is given (to measure latency and FLOPs)")


def _phase_metrics(
    state: JobState, model: LoadedModel
) -> tuple[PhaseMetrics | None, torch.Tensor | None, torch.Tensor | None]:
    if state.data is None:
        return None, None, None
    bs, fixed = state.spec.evaluation.batch_size, model.fixed_batch_size
    train_logits = predict_logits(model.module, state.data.x_train, bs, state.device, fixed)
    val_logits = predict_logits(model.module, state.data.x_val, bs, state.device, fixed)
    if not state.data.labelled:
        return None, train_logits, val_logits
    train = split_metrics(train_logits, state.data.y_train)
    val = split_metrics(val_logits, state.data.y_val)
    gap = train.accuracy - val.accuracy if train.accuracy is not None and val.accuracy is not None else None
    return PhaseMetrics(train=train, val=val, gap=gap), train_logits, val_logits


def _batch_of(sample: torch.Tensor, n: int) -> torch.Tensor:
    return sample.expand(n, *sample.shape[1:]).contiguous()


def _file_sizes(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    return len(raw), len(zlib.compress(raw, 9))


def _measure(state: JobState, model: LoadedModel, artifact: Path) -> Measurement:
    model.set_train(False)
    module = model.module
    metrics, train_logits, val_logits = _phase_metrics(state, model)
    assert state.sample is not None  # set right after loading
    sample = state.sample.to(state.device)
    per_call = model.fixed_batch_size or 1
    dense, effective = count_flops(module, _batch_of(sample, per_call))
    dense, effective = dense // per_call, effective // per_call
    total, nonzero = count_params(module)
    raw, zipped = _file_sizes(artifact)
    size = SizeStats(
        params_total=total,
        params_nonzero=nonzero,
        flops_dense=dense,
        flops_effective=effective,
        flops_method=FLOPS_METHOD,
        artifact_bytes=raw,
        artifact_zipped_bytes=zipped,
    )
    return Measurement(metrics, val_logits, train_logits, size)


def _time_both(
    state: JobState, original: LoadedModel, compressed: LoadedModel, before: Measurement, after: Measurement
) -> None:
    """Latency of the original and of the reloaded artifact, timed interleaved under the same load."""
    assert state.sample is not None
    spec = state.spec.evaluation.latency
    fixed = compressed.fixed_batch_size or original.fixed_batch_size
    if fixed and fixed != spec.batch_size:
        # A program exported with a static batch size runs only at that size.
        spec = spec.model_copy(update={"batch_size": fixed})
        state.notes.append(f"latency measured at the exported program's static batch size {fixed}")
    before.latency, after.latency = measure_latencies(
        [original.module, compressed.module], state.sample.to(state.device), spec, state.device
    )


def _load_inputs(state: JobState, data_path: Path | None) -> LoadedModel:
    model = load_model(state.model_path, state.spec.model)
    if data_path is not None:
        state.data = load_dataset(data_path, state.spec.data)
    state.sample = _example_sample(state, model)
    model.module.to(state.device)
    model.set_train(False)
    if state.data is not None:
        with torch.inference_mode():
            out = model.module(_batch_of(state.sample, model.fixed_batch_size or 1).to(state.device))
        out = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise UnsupportedError("only classification models (output [batch, classes]) can be evaluated on data")
        check_labels_fit(state.data, out.shape[1])
    return model


def _train_or_prune(
    state: JobState, model: LoadedModel, teacher: Measurement, cfg: MaskPruningSpec
) -> tuple[FinetuneResult, list[str]]:
    targets = select_targets(model.module, cfg)
    names = [t.name for t in targets]
    ft = state.spec.finetune
    if state.data is None or (ft.epochs == 0 and ft.regularize_epochs == 0):
        if state.data is None and (ft.epochs or ft.regularize_epochs):
            state.notes.append("no data was given: pruned without fine-tuning; accuracy was not measured")
        with state.stage("prune"):
            masks = MaskController(model.module, targets, cfg, 0, 1, state.spec.seed)
            masks.start()
            masks.finish()
        return FinetuneResult(), names
    if model.fixed_batch_size and ft.batch_size != model.fixed_batch_size:
        state.notes.append(
            f"the exported program has a static batch size: trained with batches of {model.fixed_batch_size}"
        )
        ft = ft.model_copy(update={"batch_size": model.fixed_batch_size})
    if not state.data.labelled and ft.regularizers.distillation is None:
        state.notes.append("unlabelled data: fine-tuned by distillation from the original model only")
    inp = PhaseInputs(
        model=model,
        data=state.data,
        targets=targets,
        cfg=cfg,
        teacher_train_logits=teacher.train_logits,
        teacher_val_logits=teacher.val_logits,
        device=state.device,
        seed=state.spec.seed,
        eval_batch_size=state.spec.evaluation.batch_size,
    )
    total = ft.regularize_epochs + ft.epochs
    first = FinetuneResult()
    with state.stage("finetune"):
        if ft.regularize_epochs:
            first = regularize_phase(inp, ft, lambda r, _: _on_epoch(state, r, r.epoch / total))
            state.notes.append(f"regularize-then-prune: {ft.regularize_epochs} regularized epochs before pruning")
        done = ft.regularize_epochs
        result = prune_and_recover(inp, recovery_spec(ft), lambda r, _: _on_epoch(state, r, (done + r.epoch) / total))
    result.history = renumber(first.history, result.history)
    state.notes.extend([*first.notes, *result.notes])
    return result, names


def _on_epoch(state: JobState, record: EpochRecord, fraction: float) -> None:
    state.progress.update("finetune", fraction, f"epoch {record.epoch}", **record.model_dump())


def _output_format(spec: JobSpec, model: LoadedModel) -> str:
    fmt = spec.output.format
    if isinstance(spec.pruning, StructuralPruning) and model.format == "state_dict" and fmt in ("same", "state_dict"):
        # The architecture's own constructor builds full widths: a dense smaller model needs a self-describing
        # format. The state-dict and its widths are written beside it (model.state.safetensors, model.widths.json).
        return "torchscript"
    if fmt == "same":
        return model.format
    if model.format != "state_dict" and fmt != model.format:
        raise InvalidSpecError(
            f"output.format '{fmt}' needs a state-dict input (the input is {model.format}); use 'same'"
        )
    return fmt


def run_compress(
    spec: JobSpec, model_path: Path, data_path: Path | None, out_dir: Path, progress: StageProgress
) -> Report:
    """Run a compress job and write the artifact and report.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    device = resolve_device(spec.device)
    state = JobState(spec=spec, model_path=model_path, out_dir=out_dir, progress=progress, device=device)
    if spec.device == "cuda" and device.type != "cuda":
        state.notes.append("device 'cuda' was requested but no GPU is available: ran on CPU")
    with state.stage("load"):
        model = _load_inputs(state, data_path)
        out_fmt = _output_format(spec, model)
    with state.stage("baseline"):
        original = model.clone()  # kept unpruned: timed side by side with the artifact at the end
        before = _measure(state, model, model_path)
    extra: dict[str, object] = {}
    if isinstance(spec.pruning, StructuralPruning):
        result, target_names, extra["structural"] = _structural(state, model, before, spec.pruning)
    else:
        result, target_names = _train_or_prune(state, model, before, spec.pruning)
    with state.stage("save"):
        artifact = save_model(model, out_dir, out_fmt, state.sample)  # type: ignore[arg-type]
        if isinstance(spec.pruning, StructuralPruning):
            widths = extra["structural"]["widths"]  # type: ignore[index]
            extra["sidecar_files"] = write_state_dict_sidecar(model, out_dir, widths)
    with state.stage("evaluate", "re-measuring the saved artifact"):
        # Everything "after" is measured on the artifact as reloaded, i.e. what the user downloads.
        reloaded = load_model(artifact, ModelSpec(format=out_fmt, **_arch_fields(model, out_fmt)))  # type: ignore[arg-type]
        reloaded.module.to(device)
        after = _measure(state, reloaded, artifact)
        _time_both(state, original, reloaded, before, after)
        sparsity = sparsity_stats(reloaded.module, set(target_names), _target(spec))
        if spec.output.also_onnx:
            extra["onnx"] = _onnx(state, reloaded, out_dir)
    with state.stage("report"):
        report = _assemble(state, model, out_fmt, artifact, before, after, sparsity, result)
        report.extra.update(extra)
        (out_dir / "report.json").write_text(report.model_dump_json(indent=2))
    return report


def _target(spec: JobSpec) -> float:
    if isinstance(spec.pruning, StructuralPruning):
        return spec.pruning.channel_sparsity
    return spec.pruning.sparsity


def _structural(
    state: JobState, model: LoadedModel, teacher: Measurement, cfg: StructuralPruning
) -> tuple[FinetuneResult, list[str], dict[str, object]]:
    assert state.sample is not None
    ft = state.spec.finetune if state.data is not None else state.spec.finetune.model_copy(update={"epochs": 0})
    args = {
        "device": state.device,
        "spec": ft,
        "latency": state.spec.evaluation.latency,
        "teacher_train_logits": teacher.train_logits,
        "teacher_val_logits": teacher.val_logits,
        "seed": state.spec.seed,
        "eval_batch_size": state.spec.evaluation.batch_size,
    }
    with state.stage("prune", "removing channels"):
        result, info = structural_prune_and_recover(
            model, cfg, state.sample, state.data, args, lambda r, f: _on_epoch(state, r, f)
        )
    state.notes.append(
        f"structural pruning: channels removed physically; MACs {info['macs_before']} -> {info['macs_after']}"
    )
    return result, [], info


def _onnx(state: JobState, model: LoadedModel, out_dir: Path) -> dict[str, object]:
    from worker.engine.export_onnx import export_onnx

    assert state.sample is not None
    check = export_onnx(model.module, state.sample.to(state.device), out_dir / "model.onnx")
    if not check.passed:
        state.notes.append(f"ONNX export differs from PyTorch by up to {check.max_abs_diff:.2e} (atol {check.atol})")
    return check.to_dict()


def _arch_fields(model: LoadedModel, out_fmt: str) -> dict[str, object]:
    if model.architecture is None or out_fmt != "state_dict":
        return {}
    return {"architecture": model.architecture, "kwargs": model.arch_kwargs}


def _fidelity(state: JobState, before: Measurement, after: Measurement) -> Fidelity | None:
    if before.val_logits is None or after.val_logits is None:
        return None
    return fidelity(before.val_logits, after.val_logits, "val")


def _data_summary(data: Dataset | None) -> dict[str, object]:
    if data is None:
        return {"given": False, "note": "no data: accuracy and fidelity were not measured"}
    return {
        "given": True,
        "labelled": data.labelled,
        "train_samples": len(data.x_train),
        "val_samples": len(data.x_val),
        "split": data.split,
        "sample_shape": list(data.sample_shape),
    }


def _assemble(
    state: JobState,
    model: LoadedModel,
    out_fmt: str,
    artifact: Path,
    before: Measurement,
    after: Measurement,
    sparsity: SparsityStats,
    result: FinetuneResult,
) -> Report:
    spec = state.spec
    drop = None
    if (
        before.metrics
        and after.metrics
        and before.metrics.val.accuracy is not None
        and after.metrics.val.accuracy is not None
    ):
        drop = before.metrics.val.accuracy - after.metrics.val.accuracy
    assert before.latency is not None and after.latency is not None
    speedup = before.latency.median_ms / after.latency.median_ms if after.latency.median_ms > 0 else None
    why = (
        "not measured: no labelled data was given" if state.data is None or not state.data.labelled else "not measured"
    )
    measured = Measured(
        accuracy_drop=drop,
        sparsity=sparsity.global_sparsity,
        latency_ms=after.latency.median_ms,
        artifact_bytes=after.size.artifact_bytes,
        speedup=speedup,
        generalization_gap=after.metrics.gap if after.metrics else None,
        why_missing=why,
    )
    gates = evaluate_gates(spec.gates, measured)
    return Report(
        kind=spec.kind,
        status="passed" if all(g.passed for g in gates) else "gate_missed",
        spec=spec.model_dump(mode="json"),
        seed=spec.seed,
        input_format=model.format,
        output_format=out_fmt,
        artifact_name=artifact.name,
        data=_data_summary(state.data),
        notes=state.notes,
        before=before.metrics,
        after=after.metrics,
        accuracy_drop=drop,
        fidelity=_fidelity(state, before, after),
        sparsity=sparsity,
        size_before=before.size,
        size_after=after.size,
        latency_before=before.latency,
        latency_after=after.latency,
        speedup=speedup,
        history=result.history,
        gates=gates,
        stage_seconds=state.stage_seconds,
        environment=describe_environment(state.device, state.device.type == "cuda"),
        extra={"best_epoch": result.best_epoch, "stopped_early": result.stopped_early},
    )


def require_data(data: Dataset | None, what: str) -> Dataset:
    """Analysis kinds (sensitivity, sweep, search) need labelled data."""
    if data is None or not data.labelled:
        raise InvalidDataError(f"{what} jobs need a labelled dataset (x_train, y_train)")
    return data
