"""Kind ``dry_run``: a pre-flight check in seconds, on CPU, without pruning or fine-tuning anything.

It loads the model and data, runs one forward pass, plans the requested pruning (mask targets, or channel removal
on a copy for ``structural``) and writes report.json with a ``dry_run`` section. What the full job would fail on is
collected as problems, not raised; only a model that cannot be loaded at all fails the dry run itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from prunekit.spec import JobSpec
from prunekit.spec.report import (
    DryRunInput,
    DryRunProblemCode,
    DryRunReport,
    Report,
    SizeStats,
    SparsityStats,
)
from worker.engine.dry_run_plan import Findings, Plan, plan_pruning
from worker.engine.environment import describe_environment
from worker.engine.errors import EngineError, InvalidSpecError, ResourceLimitError, UnsupportedError
from worker.engine.evaluation.flops import FLOPS_METHOD
from worker.engine.evaluation.sparsity import count_params
from worker.engine.inputs import first_forward
from worker.engine.job_state import JobState
from worker.engine.models.calling import main_output
from worker.engine.models.handle import LoadedModel
from worker.engine.models.loading import load_model
from worker.engine.pipeline import _example_sample, attach_data
from worker.engine.progress import StageProgress
from worker.engine.report import data_summary
from worker.engine.strategies import strategy_for
from worker.engine.strategies.base import PruningStrategy
from worker.engine.tasks import check_outputs_fit, task_of

DRY_RUN_WEIGHTS: dict[str, float] = {"load": 40, "analyze": 55, "report": 5}
FORMATS = ("same", "torchscript", "export", "state_dict", "huggingface", "sparse_state_dict")
RUNTIMES = {
    "torchscript": "TorchScript: torch.jit.load in Python or libtorch (C++)",
    "export": "torch.export program: torch.export.load, AOTInductor or ExecuTorch lowering",
    "state_dict": "eager PyTorch, with the registered architecture",
    "huggingface": "transformers: AutoModel*.from_pretrained",
    "sparse_state_dict": "eager PyTorch, after expanding the surviving weights into the registered architecture",
}
ONNX_RUNTIME = "onnxruntime, with output.also_onnx (the export is not tried by the dry run)"
Code = DryRunProblemCode


def run_dry_run(
    spec: JobSpec, model_path: Path, data_path: Path | None, out_dir: Path, progress: StageProgress
) -> Report:
    """Check the job without running it; writes report.json (with report.dry_run) into out_dir, no artifact."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    state = JobState(spec=spec, model_path=model_path, out_dir=out_dir, progress=progress, device=torch.device("cpu"))
    found = Findings()
    with state.stage("load", "loading the model and data"):
        model = load_model(model_path, spec.model)  # a model that cannot load fails the dry run
        state.task = task_of(model)
        source = load_sample(state, model, data_path, found)
    with state.stage("analyze", "planning the pruning"):
        strategy = _strategy(spec, found)
        out_fmt = _output_format(strategy, model, spec.output.format, found) if strategy else None
        section = _section(state, model, strategy, plan_pruning(state, model, found), found)
    section.inputs_source, section.output_format = source, out_fmt
    section.seconds = round(time.perf_counter() - started, 4)
    report = _report(state, model, strategy, section, found, out_fmt)
    (out_dir / "report.json").write_text(report.model_dump_json(indent=2))
    return report


def _strategy(spec: JobSpec, found: Findings) -> PruningStrategy | None:
    """The method's strategy, or None (and a problem) for a method this worker cannot run."""
    try:
        return strategy_for(spec.pruning)
    except UnsupportedError as exc:
        found.add(Code.PRUNING_PLAN, exc)
        return None


def _section(
    state: JobState, model: LoadedModel, strategy: PruningStrategy | None, plan: Plan, found: Findings
) -> DryRunReport:
    formats = _possible_formats(strategy, model) if strategy else []
    return DryRunReport(
        format=model.format,
        container=model.source_container,
        task=str(state.task),
        architecture=model.architecture,
        method=state.spec.pruning.method,
        inputs=_described(state),
        forward_ok=state.inputs is not None,
        prunable=plan.layers,
        not_prunable=plan.not_prunable,
        skipped_layers=plan.skipped,
        classifier=plan.classifier,
        structural_blockers=found.blockers,
        expected=plan.estimate,
        output_formats=formats,
        runtimes=[RUNTIMES.get(f, f) for f in formats] + ([ONNX_RUNTIME] if formats else []),
        problems=found.problems,
    )


def load_sample(state: JobState, model: LoadedModel, data_path: Path | None, found: Findings) -> str:
    """Load the data and run one forward pass on a sample, as a compress job would; returns where it came from.

    state.inputs stays None when no sample the model runs on could be built.
    """
    if data_path is not None:
        try:
            attach_data(state, model, data_path)
        except EngineError as exc:
            found.add(Code.INVALID_DATA, exc)
    try:
        state.inputs = _example_sample(state, model)
    except InvalidSpecError as exc:
        found.add(Code.INPUT_MISMATCH if state.data is not None else Code.MISSING_INPUTS, exc)
        if state.data is None:
            return ""
        data, state.data = state.data, None  # the declared inputs still let the rest be checked
        source = load_sample(state, model, None, found)
        state.data = data
        return source
    source = _source(state, model)
    try:
        state.place(model.module)  # streamed when too large for the device: the full job would refuse or stream
    except ResourceLimitError as exc:
        found.add(Code.DEVICE_MEMORY, exc)
        if state.offload is None:  # not even one block at a time: nothing can run
            return source
    model.set_train(False)
    try:
        out = first_forward(model, state.inputs, state.device, from_data=state.data is not None)
    except EngineError as exc:
        found.add(Code.FORWARD_FAILED, exc)
        state.inputs = None
        return source
    state.sample = next(iter(state.inputs.values()))
    if state.data is not None:
        try:
            check_outputs_fit(task_of(model), main_output(out), state.data)
        except EngineError as exc:
            found.add(Code.OUTPUTS_MISMATCH, exc)
    return source


def _source(state: JobState, model: LoadedModel) -> str:
    if state.data is not None:
        return "data"
    if state.spec.model.input_specs() is not None:
        return "spec"
    return "model config" if model.hf_source is not None else "exported program"


def _described(state: JobState) -> list[DryRunInput]:
    return [
        DryRunInput(name=k, dtype=str(v.dtype).removeprefix("torch."), shape=list(v.shape))
        for k, v in (state.inputs or {}).items()
    ]


def _output_format(strategy: PruningStrategy, model: LoadedModel, requested: str, found: Findings) -> str | None:
    """The artifact format the full job would write, or None (and a problem) when it would refuse."""
    try:
        return strategy.output_format(model, requested)
    except UnsupportedError as exc:
        found.block(exc)  # structural pruning of a format it cannot handle
    except InvalidSpecError as exc:
        found.add(Code.OUTPUT_FORMAT, exc)
    return None


def _possible_formats(strategy: PruningStrategy, model: LoadedModel) -> list[str]:
    """Every artifact format some output.format gives for this model and method."""
    out: list[str] = []
    for requested in FORMATS:
        if requested == "huggingface" and model.hf_source is None:
            continue  # only a checkpoint's own folder can be written back as one
        try:
            fmt = strategy.output_format(model, requested)
        except EngineError:
            continue
        if fmt not in out:
            out.append(fmt)
    return out


# --- report ---------------------------------------------------------------------------------------------------


def _report(
    state: JobState,
    model: LoadedModel,
    strategy: PruningStrategy | None,
    section: DryRunReport,
    found: Findings,
    out_fmt: str | None,
) -> Report:
    total, nonzero = count_params(model.module)
    est = section.expected
    size = SizeStats(
        params_total=total,
        params_nonzero=nonzero,
        flops_dense=est.macs_before * 2 if est and est.macs_before is not None else None,
        flops_method=FLOPS_METHOD if est else "",
        artifact_bytes=state.model_path.stat().st_size,
    )
    notes = [
        "dry run: nothing was pruned or fine-tuned and no artifact was written; the expected sizes in "
        "dry_run.expected are estimates",
        *(state.data.notes if state.data is not None else []),
        *found.notes,
        *([state.offload.note(state.device)] if state.offload is not None else []),
    ]
    return Report(
        kind="dry_run",
        spec=state.spec.model_dump(mode="json"),
        seed=state.spec.seed,
        input_format=model.format,
        output_format=out_fmt or model.format,
        data=data_summary(state.data),
        notes=notes,
        sparsity=SparsityStats(
            global_sparsity=0.0,
            overall_sparsity=0.0,
            target_sparsity=strategy.target_sparsity if strategy else None,
            classifier=section.classifier,
            not_prunable=section.not_prunable,
            skipped_layers=section.skipped_layers,
        ),
        size_before=size,
        size_after=size,
        dry_run=section,
        stage_seconds=state.stage_seconds,
        environment=describe_environment(state.device, False),
    )
