"""One compress job: load, measure, prune, fine-tune, re-measure the saved artifact, report."""

from __future__ import annotations

from pathlib import Path

import torch

from prunekit.spec import JobSpec, ModelSpec
from prunekit.spec.job import InputSpec
from prunekit.spec.quantization import QuantizationSpec
from prunekit.spec.report import QuantizationReport, Report
from worker.engine.data import Dataset, load_dataset
from worker.engine.environment import resolve_device
from worker.engine.errors import InvalidDataError, InvalidSpecError
from worker.engine.evaluation.sparsity import sparsity_stats
from worker.engine.inputs import check_sample, first_forward, program_sample, random_sample
from worker.engine.job_state import JobState
from worker.engine.measure import Measurement, measure, time_both
from worker.engine.models.calling import ModelInputs, inputs_to, main_output
from worker.engine.models.handle import LoadedModel
from worker.engine.models.huggingface import default_input_specs
from worker.engine.models.loading import load_model, load_state_dict_file, load_weights_into
from worker.engine.models.saving import save_model
from worker.engine.models.sparse import FORMAT as SPARSE_FORMAT
from worker.engine.progress import StageProgress
from worker.engine.quantization import Quantized, QuantizeRequest, quantize
from worker.engine.quantization.checks import check_quantizable
from worker.engine.quantization.measure import measure_quantized
from worker.engine.report import assemble_report
from worker.engine.stages import StageInputs, stage_records
from worker.engine.strategies import PruneOutcome, strategy_for
from worker.engine.tasks import EvalTask, check_outputs_fit, task_of, text_context


def _example_sample(state: JobState, model: LoadedModel) -> ModelInputs:
    """One sample ([1, ...]) of every input: from the data, the spec's inputs / input_shape, or the exported program."""
    specs = state.spec.model.input_specs()
    if state.data is not None:
        sample = {k: v[:1].clone() for k, v in state.data.val_inputs().items()}
        check_sample(sample, specs)
        return sample
    specs = specs or hf_input_specs(model, state.spec.data.seq_len)
    if specs is not None:
        return random_sample(specs, state.spec.seed)
    from_program = program_sample(model)
    if from_program is not None:
        return from_program
    raise InvalidSpecError(
        "model.input_shape is required when no data is given (to measure latency and FLOPs); for token ids or "
        "several inputs set model.inputs"
    )


def hf_input_specs(model: LoadedModel, seq_len: int) -> list[InputSpec] | None:
    """A Hugging Face model's inputs from its config (token ids or pixels) when the spec declares none."""
    if model.hf_source is None:
        return None
    return [InputSpec.model_validate(s) for s in default_input_specs(model.module, model.task, seq_len)]


def attach_data(state: JobState, model: LoadedModel, data_path: Path) -> None:
    """Load the job's dataset into state.data, read as the model's task needs (the dry run reuses this)."""
    specs = state.spec.model.input_specs() or hf_input_specs(model, state.spec.data.seq_len)
    task = task_of(model)
    state.data = load_dataset(data_path, state.spec.data, specs, text=text_context(model, task))
    state.data.causal_lm = task == EvalTask.CAUSAL_LM  # token ids whose targets are the next tokens
    state.data.features = task == EvalTask.FEATURE_EXTRACTION


def _load_inputs(state: JobState, data_path: Path | None) -> LoadedModel:
    model = load_model(state.model_path, state.spec.model)
    state.task = task_of(model)
    if data_path is not None:
        attach_data(state, model, data_path)
    state.inputs = _example_sample(state, model)
    state.sample = next(iter(state.inputs.values()))
    state.place(model.module)
    model.set_train(False)
    out = first_forward(model, state.inputs, state.device, from_data=state.data is not None)
    if state.data is not None:
        check_outputs_fit(state.task, main_output(out), state.data)
    return model


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
    strategy = strategy_for(spec.pruning)  # mask methods, structural removal, ...: see worker/engine/strategies
    with state.stage("load"):
        model = _load_inputs(state, data_path)
        out_fmt = strategy.output_format(model, spec.output.format)
        if spec.quantization is not None:
            check_quantizable(state, model, out_fmt, spec.quantization)
    with state.stage("baseline"):
        original = model.clone()  # kept unpruned: timed side by side with the artifact at the end
        # Distillation runs it batch by batch where its outputs are too big to keep (causal-LM logits, block outputs).
        state.teacher = original.module
        before = measure(state, model, model_path)
    outcome = strategy.prune(state, model, before)
    extra: dict[str, object] = {}
    with state.stage("save"):
        artifact = save_model(model, out_dir, out_fmt, state.inputs)  # type: ignore[arg-type]
        strategy.write_sidecars(model, out_dir)
    with state.stage("evaluate", "re-measuring the saved artifact"):
        # Everything "after" is measured on the artifact as reloaded, i.e. what the user downloads.
        reloaded = _reload(state, model, artifact, out_fmt)
        state.place(reloaded.module)
        after = measure(state, reloaded, artifact)
        time_both(state, original, reloaded, before, after)
        sparsity = sparsity_stats(reloaded.module, set(outcome.target_names), strategy.target_sparsity)
        if spec.output.also_onnx:
            extra["onnx"] = _onnx(state, reloaded, out_dir)
    stages = StageInputs(before, outcome.pruned, outcome.pruned_note, after, artifact, len(outcome.result.history))
    delivered, delivered_path, quantized = after, artifact, None
    if spec.quantization is not None:
        with state.stage("quantize", spec.quantization.method):
            quantized, delivered = _quantize(state, spec.quantization, model, out_fmt, (original, before, after))
        delivered_path = stages.quantized_artifact = quantized.path
        stages.quantized = delivered
    with state.stage("report"):
        report = assemble_report(state, model, out_fmt, delivered_path, before, delivered, sparsity, outcome.result)
        strategy.fill_report(report)
        report.extra.update(extra)
        _fill_stages(report, stages, outcome)
        if quantized is not None and spec.quantization is not None:
            _fill_quantization(report, quantized, artifact, state, spec.quantization)
        (out_dir / "report.json").write_text(report.model_dump_json(indent=2))
    return report


def _quantize(
    state: JobState,
    qspec: QuantizationSpec,
    model: LoadedModel,
    out_fmt: str,
    baseline: tuple[LoadedModel, Measurement, Measurement],
) -> tuple[Quantized, Measurement]:
    """Quantize the fine-tuned model and measure its artifact as reloaded: that is what is delivered and gated."""
    quantized = quantize(QuantizeRequest(state, model, out_fmt, qspec))
    state.notes.extend(quantized.notes)
    original, before, after = baseline
    return quantized, measure_quantized(state, original, quantized, before, after)


def _fill_stages(report: Report, stages: StageInputs, outcome: PruneOutcome) -> None:
    """dense -> pruned -> fine_tuned (-> quantized); transformer_structural measured its pruned stage itself."""
    section = report.transformer_structural
    if stages.pruned is None and section is not None and section.after_pruning is not None:
        stages.pruned = section.after_pruning
    report.stages = stage_records(stages)


def _fill_quantization(
    report: Report, quantized: Quantized, float_artifact: Path, state: JobState, qspec: QuantizationSpec
) -> None:
    """Which file is delivered, how to load it; the float artifact is removed unless kept."""
    kept: str | None = float_artifact.name
    if not qspec.keep_unquantized:
        float_artifact.unlink(missing_ok=True)
        float_artifact.with_suffix(".json").unlink(missing_ok=True)  # a state-dict's metadata file
        kept = None
    report.output_format = "onnx" if qspec.runtime == "onnxruntime" else quantized.model.format
    report.quantization = QuantizationReport(
        method=qspec.method,
        runtime=qspec.runtime,
        artifact=quantized.path.name,
        unquantized_artifact=kept,
        calibration_rows=quantized.calibration_rows,
        load=quantized.load,
        seconds=state.stage_seconds.get("quantize", 0.0),
    )
    report.notes.append(f"delivered: {quantized.path.name} ({qspec.method}); the gates hold its numbers")


def _onnx(state: JobState, model: LoadedModel, out_dir: Path) -> dict[str, object]:
    from worker.engine.export_onnx import export_onnx

    assert state.inputs is not None
    check = export_onnx(model.module, inputs_to(state.inputs, state.device), out_dir / "model.onnx")
    if not check.passed:
        state.notes.append(f"ONNX export differs from PyTorch by up to {check.max_abs_diff:.2e} (atol {check.atol})")
    return check.to_dict()


def _reload(state: JobState, model: LoadedModel, artifact: Path, out_fmt: str) -> LoadedModel:
    """The artifact as a user loads it: sparse weights of a TorchScript/export/HF model go into the upload."""
    if out_fmt != SPARSE_FORMAT:
        return load_model(artifact, ModelSpec(format=out_fmt, **_arch_fields(model, out_fmt)))
    if model.architecture is not None:
        arch = {"architecture": model.architecture, "kwargs": model.arch_kwargs, "task": model.task}
        return load_model(artifact, ModelSpec(format="state_dict", **arch))
    base = load_model(state.model_path, state.spec.model)
    load_weights_into(base.module, load_state_dict_file(artifact), f"the uploaded {base.format} model")
    state.notes.append(
        f"the sparse artifact holds the weights only: load them into the {base.format} model you uploaded "
        "(README, 'Sparse artifacts'); it was measured that way"
    )
    return base


def _arch_fields(model: LoadedModel, out_fmt: str) -> dict[str, object]:
    if out_fmt == "huggingface" or model.task != "auto":
        return {"task": model.task}
    if model.architecture is None or out_fmt != "state_dict":
        return {}
    return {"architecture": model.architecture, "kwargs": model.arch_kwargs}


def require_data(data: Dataset | None, what: str) -> Dataset:
    """Analysis kinds (sensitivity, sweep, search) need labelled data."""
    if data is None or not data.labelled:
        raise InvalidDataError(f"{what} jobs need a labelled dataset (x_train, y_train)")
    return data
