"""Local commands: run the engine in-process (`compress`), and work with specs (`spec`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from prunekit.cli.exit_codes import ExitCode
from prunekit.client.packing import packed_model
from prunekit.spec import SpecError, json_schema, load_spec
from prunekit.spec.report import report_json_schema

err = Console(stderr=True)
spec_app = typer.Typer(help="Inspect and check job specs.", no_args_is_help=True)

# Engine error codes that mean "fix your input" rather than "prunekit broke".
_INPUT_ERROR_CODES = {"invalid_model", "unsafe_model", "invalid_data", "invalid_spec", "unsupported", "resource_limit"}
_REPORT_EXIT = {
    "passed": ExitCode.OK,
    "gate_missed": ExitCode.GATE_MISSED,
    "inconclusive": ExitCode.GATE_INCONCLUSIVE,
}


@spec_app.command("schema")
def spec_schema(report: Annotated[bool, typer.Option(help="Print the report.json schema instead.")] = False) -> None:
    """Print the JSON Schema of the job spec (or of report.json)."""
    typer.echo(json.dumps(report_json_schema() if report else json_schema(), indent=2))


@spec_app.command("validate")
def spec_validate(path: Annotated[Path, typer.Argument(help="Spec file (YAML or JSON).")]) -> None:
    """Check a spec; prints the normalized spec, or each error with its field path (exit 2)."""
    try:
        spec = load_spec(path)
    except SpecError as exc:
        _print_spec_errors(exc)
        raise typer.Exit(ExitCode.INVALID_INPUT) from None
    typer.echo(spec.model_dump_json(indent=2))


def _print_spec_errors(exc: SpecError) -> None:
    if not exc.errors:
        err.print(f"[red]error:[/] {escape(str(exc))}")
    for e in exc.errors:
        err.print(f"[red]invalid spec[/] at [bold]{escape(str(e['loc'] or '<root>'))}[/]: {escape(str(e['msg']))}")


class _StageBar:
    """A rich progress bar on a terminal; plain lines otherwise (CI logs)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("load", total=100)
        self.last_stage = ""

    def __enter__(self) -> _StageBar:
        if self.live:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.__exit__(None, None, None)

    def __call__(self, event: Any) -> None:
        if self.live:
            self.progress.update(self.task, completed=event.percent, description=event.stage)
            if event.metrics.get("epoch") is not None:
                self.console.print(escape(_epoch_line(event.metrics)))
            return
        if event.metrics.get("epoch") is not None:
            line = escape(f"[{event.percent:5.1f}%] {event.stage}: {_epoch_line(event.metrics)}")
            self.console.print(line, highlight=False, soft_wrap=True)
        elif event.stage != self.last_stage:
            self.console.print(
                escape(f"[{event.percent:5.1f}%] {event.stage}: {event.message}"), highlight=False, soft_wrap=True
            )
        self.last_stage = event.stage


def _epoch_line(m: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    return (
        f"epoch {m['epoch']}: train loss {f(m.get('train_loss'))} acc {f(m.get('train_accuracy'))} | "
        f"val loss {f(m.get('val_loss'))} acc {f(m.get('val_accuracy'))} | sparsity {m.get('sparsity', 0):.3f}"
    )


def compress(
    model: Annotated[
        Path,
        typer.Argument(
            help="TorchScript, .pt2, .safetensors or weights-only .pt file, a Hugging Face checkpoint archive, or "
            "the folder model.save_pretrained() wrote."
        ),
    ],
    spec: Annotated[Path, typer.Option("--spec", "-s", help="Job spec (YAML or JSON).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the artifact and report.json.")],
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Dataset (.npz or .safetensors).")] = None,
    isolate: Annotated[bool, typer.Option(help="Load and process the model in a sandboxed child process.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report JSON on stdout.")] = False,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="CPU threads for torch [default: the cores available less one, at least 1]."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check the job in seconds without pruning (kind dry_run): report.json lists the detected model, "
            "the prunable layers, blockers, expected sizes and problems; exit 2 when there are problems.",
        ),
    ] = False,
) -> None:
    """Run a compression job on this machine, in-process, and write the pruned model and report.json."""
    try:
        job_spec = load_spec(spec)
    except SpecError as exc:
        _print_spec_errors(exc)
        raise typer.Exit(ExitCode.INVALID_INPUT) from None
    if dry_run:
        job_spec = job_spec.model_copy(update={"kind": "dry_run"})
    for path, what in ((model, "model"), (data, "data")):
        if path is not None and not path.is_file() and not (what == "model" and (path / "config.json").is_file()):
            err.print(f"[red]error:[/] {escape(_not_a_file(what, path))}")
            raise typer.Exit(ExitCode.INVALID_INPUT)
    with packed_model(model) as model_file:
        raise typer.Exit(_run_local(model_file, job_spec, data, out, isolate, as_json, threads))


def _not_a_file(what: str, path: Path) -> str:
    """Why ``path`` cannot be read as the model or data file."""
    if path.is_dir():
        if what == "data":
            return f"data path {path} is a folder; give one file: a .npz, .safetensors or .jsonl dataset"
        return (
            f"model path {path} is a folder without a config.json; give a TorchScript, .pt2, .safetensors or .pt "
            "model, or the folder model.save_pretrained() wrote"
        )
    return f"{what} file not found: {path}"


def _run_local(
    model: Path, job_spec: Any, data: Path | None, out: Path, isolate: bool, as_json: bool, threads: int | None
) -> int:
    try:
        from worker.engine.api import JobInputs, run_job
        from worker.engine.errors import EngineError
        from worker.engine.threads import default_threads
    except ImportError as exc:
        hint = escape(f"local compression needs the engine: pip install 'prunekit[engine]' ({exc})")
        err.print(f"[red]error:[/] {hint}")
        return ExitCode.INTERNAL_ERROR
    try:
        with _StageBar(err) as bar:
            outputs = run_job(
                JobInputs(model_path=model, spec=job_spec, data_path=data),
                out,
                progress=bar,
                isolate=isolate,
                threads=threads or default_threads(),
            )
    except EngineError as exc:
        err.print(f"[red]job failed[/] ({escape(exc.code)}): {escape(exc.message)}")
        return ExitCode.INVALID_INPUT if exc.code in _INPUT_ERROR_CODES else ExitCode.INTERNAL_ERROR
    report = outputs.report
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    if report.dry_run is not None:
        return _summarize_dry_run(report, outputs)
    _summarize(report, outputs)
    return _REPORT_EXIT[report.status]


def _summarize(report: Any, outputs: Any) -> None:
    acc = "not measured"
    if report.before and report.after:
        acc = f"val accuracy {report.before.val.accuracy:.4f} -> {report.after.val.accuracy:.4f}"
    err.print(
        escape(f"sparsity {report.sparsity.global_sparsity:.4f} (target {report.sparsity.target_sparsity}); {acc}")
    )
    for gate in report.gates:
        mark = "[green]pass[/]" if gate.passed else "[red]MISSED[/]"
        line = escape(f"gate {gate.name}: {gate.value} {gate.comparison} {gate.threshold}: ")
        err.print(f"{line}{mark} {escape(gate.reason)}")
    err.print(escape(f"artifact: {outputs.artifact_path}\nreport:   {outputs.report_path}"))
    if outputs.html_path:
        err.print(escape(f"html:     {outputs.html_path}"))


def _summarize_dry_run(report: Any, outputs: Any) -> int:
    """Print the dry run's summary; exit 0 without problems, else the invalid-input code."""
    from prunekit.reporting.dry_run import has_problems, summary_lines

    data = report.model_dump(mode="json")
    for line in summary_lines(data):
        err.print(escape(line), highlight=False, soft_wrap=True)
    err.print(escape(f"report:   {outputs.report_path}"))
    return ExitCode.INVALID_INPUT if has_problems(data) else ExitCode.OK


def register(app: typer.Typer) -> None:
    """Attach the local subcommands to the main app."""
    app.command("compress")(compress)
    app.add_typer(spec_app, name="spec")
