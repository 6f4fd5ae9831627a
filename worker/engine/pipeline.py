"""One compress job: load, measure, prune, fine-tune, re-measure the saved artifact, report."""

from __future__ import annotations

from pathlib import Path

import torch

from prunekit.spec import JobSpec, ModelSpec
from prunekit.spec.report import Report
from worker.engine.data import Dataset, check_labels_fit, load_dataset
from worker.engine.environment import resolve_device
from worker.engine.errors import InvalidDataError, InvalidSpecError, UnsupportedError
from worker.engine.evaluation.sparsity import sparsity_stats
from worker.engine.inputs import check_sample, first_forward, program_sample, random_sample
from worker.engine.job_state import JobState
from worker.engine.measure import measure, time_both
from worker.engine.models.calling import ModelInputs, main_output
from worker.engine.models.handle import LoadedModel
from worker.engine.models.loading import load_model
from worker.engine.models.saving import save_model
from worker.engine.progress import StageProgress
from worker.engine.report import assemble_report
from worker.engine.strategies import strategy_for


def _example_sample(state: JobState, model: LoadedModel) -> ModelInputs:
    """One sample ([1, ...]) of every input: from the data, the spec's inputs / input_shape, or the exported program."""
    specs = state.spec.model.input_specs()
    if state.data is not None:
        sample = {k: v[:1].clone() for k, v in state.data.val_inputs().items()}
        check_sample(sample, specs)
        return sample
    if specs is not None:
        return random_sample(specs, state.spec.seed)
    from_program = program_sample(model)
    if from_program is not None:
        return from_program
    raise InvalidSpecError(
        "model.input_shape is required when no data is given (to measure latency and FLOPs); for token ids or "
        "several inputs set model.inputs"
    )


def _load_inputs(state: JobState, data_path: Path | None) -> LoadedModel:
    model = load_model(state.model_path, state.spec.model)
    if data_path is not None:
        state.data = load_dataset(data_path, state.spec.data, state.spec.model.input_specs())
    state.inputs = _example_sample(state, model)
    state.sample = next(iter(state.inputs.values()))
    model.module.to(state.device)
    model.set_train(False)
    out = first_forward(model, state.inputs, state.device, from_data=state.data is not None)
    if state.data is not None:
        logits = main_output(out)
        if logits.dim() != 2:
            raise UnsupportedError(
                "only classification models (output [batch, classes]) can be evaluated on data; this one returns "
                f"{list(logits.shape)}: run it without data to prune and measure latency and FLOPs"
            )
        check_labels_fit(state.data, logits.shape[1])
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
    with state.stage("baseline"):
        original = model.clone()  # kept unpruned: timed side by side with the artifact at the end
        before = measure(state, model, model_path)
    outcome = strategy.prune(state, model, before)
    extra: dict[str, object] = {}
    with state.stage("save"):
        artifact = save_model(model, out_dir, out_fmt, state.inputs)  # type: ignore[arg-type]
        strategy.write_sidecars(model, out_dir)
    with state.stage("evaluate", "re-measuring the saved artifact"):
        # Everything "after" is measured on the artifact as reloaded, i.e. what the user downloads.
        reloaded = load_model(artifact, ModelSpec(format=out_fmt, **_arch_fields(model, out_fmt)))
        reloaded.module.to(device)
        after = measure(state, reloaded, artifact)
        time_both(state, original, reloaded, before, after)
        sparsity = sparsity_stats(reloaded.module, set(outcome.target_names), strategy.target_sparsity)
        if spec.output.also_onnx:
            extra["onnx"] = _onnx(state, reloaded, out_dir)
    with state.stage("report"):
        report = assemble_report(state, model, out_fmt, artifact, before, after, sparsity, outcome.result)
        strategy.fill_report(report)
        report.extra.update(extra)
        (out_dir / "report.json").write_text(report.model_dump_json(indent=2))
    return report


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
