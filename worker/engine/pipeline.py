"""One compress job: load, measure, prune, fine-tune, re-measure the saved artifact, report."""

from __future__ import annotations

from pathlib import Path

import torch

from prunekit.spec import JobSpec, MaskPruningSpec, ModelSpec, StructuralPruning
from prunekit.spec.report import EpochRecord, Report
from worker.engine.data import Dataset, check_labels_fit, load_dataset
from worker.engine.environment import resolve_device
from worker.engine.errors import InvalidDataError, InvalidSpecError, UnsupportedError
from worker.engine.evaluation.sparsity import sparsity_stats
from worker.engine.job_state import JobState
from worker.engine.measure import Measurement, batch_of, measure, time_both
from worker.engine.models.handle import LoadedModel
from worker.engine.models.loading import load_model
from worker.engine.models.saving import save_model
from worker.engine.progress import StageProgress
from worker.engine.pruning import select_targets
from worker.engine.report import assemble_report
from worker.engine.structural_compress import prune_and_recover as structural_prune_and_recover
from worker.engine.structural_compress import write_state_dict_sidecar
from worker.engine.training.finetune import FinetuneResult
from worker.engine.training.masking import MaskController
from worker.engine.training.phases import PhaseInputs, prune_and_recover, recovery_spec, regularize_phase, renumber


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


def _load_inputs(state: JobState, data_path: Path | None) -> LoadedModel:
    model = load_model(state.model_path, state.spec.model)
    if data_path is not None:
        state.data = load_dataset(data_path, state.spec.data)
    state.sample = _example_sample(state, model)
    model.module.to(state.device)
    model.set_train(False)
    if state.data is not None:
        with torch.inference_mode():
            out = model.module(batch_of(state.sample, model.fixed_batch_size or 1).to(state.device))
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
        before = measure(state, model, model_path)
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
        reloaded = load_model(artifact, ModelSpec(format=out_fmt, **_arch_fields(model, out_fmt)))
        reloaded.module.to(device)
        after = measure(state, reloaded, artifact)
        time_both(state, original, reloaded, before, after)
        sparsity = sparsity_stats(reloaded.module, set(target_names), _target(spec))
        if spec.output.also_onnx:
            extra["onnx"] = _onnx(state, reloaded, out_dir)
    with state.stage("report"):
        report = assemble_report(state, model, out_fmt, artifact, before, after, sparsity, result)
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


def require_data(data: Dataset | None, what: str) -> Dataset:
    """Analysis kinds (sensitivity, sweep, search) need labelled data."""
    if data is None or not data.labelled:
        raise InvalidDataError(f"{what} jobs need a labelled dataset (x_train, y_train)")
    return data
