"""Client commands that talk to a prunekit server: submit, wait, status, list, cancel, delete, download, report,
files.

Results go to stdout (one JSON document with --json), messages and progress to stderr, and the exit
code says how the job ended (prunekit/cli/exit_codes.py, docs/client.md).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from prunekit.cli.exit_codes import ExitCode
from prunekit.client import (
    DEFAULT_SERVER,
    ENV_API_KEY,
    ENV_SERVER,
    AuthError,
    ConflictError,
    Event,
    FileInfo,
    IntegrityError,
    Job,
    NotFoundError,
    NotReadyError,
    PrunekitClient,
    PrunekitError,
    RequestError,
    ServerError,
    UnreachableError,
    WaitTimeoutError,
)
from prunekit.client.packing import FolderNotAModel, packed_model
from prunekit.reporting.common import gate_threshold, gate_value, human_bytes
from prunekit.spec import SpecError, load_spec
from prunekit.spec.api import EventKind, GateStatus, JobStatus
from prunekit.spec.report import GateResult

# ------------------------------------------------------------------ shared options

ServerOpt = Annotated[
    str, typer.Option("--server", envvar=ENV_SERVER, help="Base URL of the prunekit server.", show_envvar=True)
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar=ENV_API_KEY, help="API key (Bearer).", show_envvar=True, show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (messages go to stderr).")]
HttpTimeoutOpt = Annotated[float, typer.Option("--http-timeout", help="Seconds per HTTP read/write.", min=1)]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Give up waiting after this many seconds (exit 6).", min=0)
]
OutDirOpt = Annotated[
    Path | None, typer.Option("--out", help="Download the artifact, report.json and report.html here.")
]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML (one test case per gate) here.")]
SummaryOpt = Annotated[
    Path | None,
    typer.Option("--summary", help="Append a markdown summary here (e.g. $GITHUB_STEP_SUMMARY)."),
]
PollOpt = Annotated[float, typer.Option("--poll-interval", help="Seconds between status checks.", min=0.1)]
MetaOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--meta", help="A metadata pair key=value (git SHA, branch, PR); repeat for more.", show_default=False
    ),
]
MaxOutageOpt = Annotated[
    float,
    typer.Option("--max-outage", help="Keep waiting through server outages (restarts, 5xx) this long (exit 8).", min=0),
]


def _err() -> Console:
    # Built on use: test runners swap sys.stderr, and rich must follow.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _say(message: str) -> None:
    _err().print(escape(message))


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _fail(code: ExitCode, message: str, json_out: bool = False, details: list[str] | None = None) -> NoReturn:
    console = _err()
    console.print(f"[bold red]error:[/] {escape(message)}")
    for line in details or []:
        console.print(f"  {escape(line)}")
    if json_out:
        _emit_json({"error": {"message": message, "details": details or [], "exit_code": int(code)}})
    raise typer.Exit(int(code))


@contextlib.contextmanager
def _errors(json_out: bool, server: str) -> Iterator[None]:
    """Map client exceptions to the documented exit codes."""
    try:
        yield
    except FolderNotAModel as exc:
        _fail(ExitCode.INVALID_INPUT, str(exc), json_out)
    except SpecError as exc:
        _fail(
            ExitCode.INVALID_INPUT,
            str(exc).split(":")[0],
            json_out,
            [f"{e['loc'] or '<root>'}: {e['msg']}" for e in exc.errors] or [str(exc)],
        )
    except AuthError as exc:
        _fail(
            ExitCode.AUTH_ERROR,
            f"not authorized by {server} ({exc.detail or exc.title}); check --api-key / {ENV_API_KEY}",
            json_out,
        )
    except NotFoundError as exc:
        _fail(ExitCode.INVALID_INPUT, f"not found: {exc.detail or exc.title}", json_out)
    except RequestError as exc:
        details = [f"{e.loc or '<root>'}: {e.msg}" for e in exc.errors]
        _fail(ExitCode.INVALID_INPUT, f"{exc.code}: {exc.detail or exc.title}", json_out, details)
    except UnreachableError as exc:
        _fail(ExitCode.UNREACHABLE, str(exc), json_out)
    except ServerError as exc:
        # A proxy's 502-504 after every retry means the API itself is not there.
        code = ExitCode.UNREACHABLE if exc.status in (502, 503, 504) else ExitCode.INTERNAL_ERROR
        _fail(code, f"server error from {server}: {exc}", json_out)
    except IntegrityError as exc:
        _fail(ExitCode.INTERNAL_ERROR, str(exc), json_out)
    except PrunekitError as exc:
        _fail(ExitCode.INTERNAL_ERROR, str(exc), json_out)


def _client(server: str, api_key: str | None, http_timeout: float = 60.0) -> PrunekitClient:
    return PrunekitClient(server, api_key, timeout=http_timeout)


def _metadata(pairs: list[str] | None, json_out: bool) -> dict[str, str]:
    """`--meta key=value` options as a dict (the server checks the keys and lengths)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(ExitCode.INVALID_INPUT, f"--meta {pair!r}: give key=value, e.g. --meta branch=main", json_out)
        out[key] = value
    return out


def outcome_code(job: Job) -> ExitCode:
    """The exit code a finished job stands for."""
    if job.status is JobStatus.SUCCEEDED:
        if job.gate_status is GateStatus.INCONCLUSIVE:
            return ExitCode.GATE_INCONCLUSIVE
        return ExitCode.GATE_MISSED if job.gate_status is GateStatus.GATE_MISSED else ExitCode.OK
    if job.status is JobStatus.FAILED:
        return ExitCode.JOB_FAILED
    if job.status is JobStatus.CANCELED:
        return ExitCode.CANCELED
    return ExitCode.OK


def _gate_measure(gate: GateResult) -> str:
    return f"{gate_value(gate.name, gate.value)} (required {gate_threshold(gate.model_dump())})"


def _error_text(job: Job) -> str:
    return f"{job.error.code}: {job.error.message}" if job.error else ""


def _outcome_text(job: Job) -> str:
    if job.status is JobStatus.SUCCEEDED:
        if job.gate_status is GateStatus.GATE_MISSED:
            names = ", ".join(f"{g.name} {_gate_measure(g)}" for g in job.gates if not g.passed)
            return f"job {job.id} succeeded but missed a gate: {names or 'see the report'}"
        if job.gate_status is GateStatus.INCONCLUSIVE:
            names = ", ".join(f"{g.name}: {g.reason}" for g in job.gates if g.outcome == "inconclusive")
            return f"job {job.id} succeeded but a gate is inconclusive: {names or 'see the report'}"
        return f"job {job.id} succeeded" + (", all gates passed" if job.gates else "")
    suffix = f": {_error_text(job)}" if job.error else ""
    return f"job {job.id} {job.status}{suffix}"


# ------------------------------------------------------------------ progress


class _Watcher:
    """Shows a job's progress: a rich bar on a terminal, plain timestamped lines otherwise (CI logs)."""

    def __init__(self, job_id: str, tty: bool | None = None) -> None:
        self.job_id = job_id
        self.console = _err()
        self.tty = self.console.is_terminal if tty is None else tty
        self.start = time.monotonic()
        self._last_key: tuple[Any, ...] | None = None
        self._last_pct = -100.0
        self._last_line = 0.0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Watcher:
        if self.tty:
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(escape(f"{self.job_id} waiting"), total=100)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _line(self, text: str) -> None:
        stamp = f"[{time.monotonic() - self.start:6.0f}s]"
        if self._progress is not None:
            self._progress.console.print(escape(text))
        else:
            self.console.print(escape(f"{stamp} {text}"))

    def update(self, job: Job) -> None:
        status, stage = job.status, job.stage or ""
        pct = 100.0 if status is JobStatus.SUCCEEDED else job.percent
        if self._progress is not None:
            desc = f"{self.job_id} {status}" + (f" · {stage}" if stage else "")
            self._progress.update(self._task, completed=pct, description=escape(desc))
            return
        key = (status, stage)
        now = time.monotonic()
        # CI logs: a line per change of state or stage, every 10 points, and a heartbeat each minute.
        if key != self._last_key or pct - self._last_pct >= 10 or now - self._last_line >= 60:
            self._line(f"{self.job_id} {status}" + (f" {stage}" if stage else "") + f" {pct:.0f}%")
            self._last_key, self._last_pct, self._last_line = key, pct, now

    def event(self, event: Event) -> None:
        if event.percent is not None and event.kind is not EventKind.STATE:
            self._progress_event(event)
        elif event.message:
            self._line(f"  {event.message}")

    def _progress_event(self, event: Event) -> None:
        """A progress update (stage change, epoch): one line in CI logs, counted as the status line it stands for."""
        if self._progress is not None:  # the bar shows the percent; an epoch's message still gets its line
            if event.kind is not EventKind.PROGRESS and event.message:
                self._line(f"  {event.message}")
            return
        stage = event.stage or (self._last_key[1] if self._last_key else "")
        pct = event.percent or 0.0
        note = f" · {event.message}" if event.message and event.message != event.stage else ""
        self._line(f"{self.job_id} {JobStatus.RUNNING}" + (f" {stage}" if stage else "") + f" {pct:.0f}%{note}")
        self._last_key, self._last_pct, self._last_line = (JobStatus.RUNNING, stage), pct, time.monotonic()

    def retrying(self, exc: Exception, delay: float) -> None:
        self._line(f"server not answering ({type(exc).__name__}: {str(exc)[:160]}); retrying in {delay:.0f}s")


class _UploadProgress:
    """Shows an upload's progress: a rich bar with its speed on a terminal, a line per 10% otherwise (CI logs)."""

    def __init__(self, name: str, total: int, tty: bool | None = None) -> None:
        self.name, self.total = name, total
        self.console = _err()
        self.tty = self.console.is_terminal if tty is None else tty
        self._progress: Any = None
        self._task: Any = None
        self._next_tenth = 1

    def __enter__(self) -> _UploadProgress:
        if self.tty:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            self._progress = Progress(*columns, console=self.console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task(escape(self.name), total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, sent: int, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=sent)
            return
        # A resumed upload may report fewer bytes than before; only new tenths get a line.
        while total and sent * 10 >= self._next_tenth * total and self._next_tenth <= 10:
            self.console.print(escape(f"{self.name}: {self._next_tenth * 10}% of {human_bytes(total)} sent"))
            self._next_tenth += 1


def _upload(client: PrunekitClient, path: Path, kind: str) -> FileInfo:
    """Upload with a progress display (resumable chunks for large files)."""
    with _UploadProgress(path.name, path.stat().st_size) as progress:
        return client.upload_file(path, kind=kind, on_progress=progress)


# ------------------------------------------------------------------ waiting and results


def _wait_and_finish(
    client: PrunekitClient,
    job_id: str,
    *,
    timeout: float | None,
    poll_interval: float,
    max_outage: float,
    out: Path | None,
    junit: Path | None,
    summary: Path | None,
    json_out: bool,
) -> NoReturn:
    from prunekit.reporting.junit import render_junit_failure

    try:
        with _Watcher(job_id) as watcher:
            job = client.wait(
                job_id,
                timeout=timeout,
                poll_interval=poll_interval,
                max_outage=max_outage,
                on_update=watcher.update,
                on_event=watcher.event,
                on_retry=watcher.retrying,
            )
    except WaitTimeoutError as exc:
        if junit is not None:
            _write(junit, render_junit_failure(job_id, f"still running after {timeout:g} s", "timeout"))
        last = exc.job.model_dump(mode="json") if exc.job else {"id": job_id, "status": "unknown"}
        if json_out:
            _emit_json({"job": last, "exit_code": int(ExitCode.WAIT_TIMEOUT), "files": {}})
        _say(
            f"job {job_id} not finished after {timeout:g} s (still {last['status']}); "
            f"resume with: prunekit wait {job_id}"
        )
        raise typer.Exit(int(ExitCode.WAIT_TIMEOUT)) from None
    except KeyboardInterrupt:
        _say(
            f"\nstopped waiting; the job keeps running. Resume: prunekit wait {job_id} · stop: prunekit cancel {job_id}"
        )
        raise typer.Exit(130) from None
    _finish(client, job, out=out, junit=junit, summary=summary, json_out=json_out)


def _write(path: Path, text: str, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as fh:
        fh.write(text)


def _finish(
    client: PrunekitClient,
    job: Job,
    *,
    out: Path | None,
    junit: Path | None,
    summary: Path | None,
    json_out: bool,
) -> NoReturn:
    from prunekit.reporting.junit import render_junit, render_junit_failure
    from prunekit.reporting.markdown import render_failure_markdown, render_markdown

    job_id = job.id
    files: dict[str, str] = {}
    report: dict[str, Any] | None = None
    if job.status is JobStatus.SUCCEEDED and (junit or summary or out or job.kind == "dry_run"):
        try:
            report = client.get_report(job_id)
        except (NotReadyError, NotFoundError) as exc:
            _say(f"warning: job {job_id} has no report: {exc}")
    if junit is not None:
        if report is not None:
            _write(junit, render_junit(report, job_id))
        else:
            _write(junit, render_junit_failure(job_id, _error_text(job) or _outcome_text(job), job.status.value))
        files["junit"] = str(junit)
    if summary is not None:
        # Appended: $GITHUB_STEP_SUMMARY collects what every step adds.
        if report is not None:
            text = render_markdown(report, job_id)
        else:
            text = render_failure_markdown(job.model_dump(mode="json"))
        _write(summary, text + "\n", append=True)
        files["summary"] = str(summary)
    if out is not None and job.status is JobStatus.SUCCEEDED:
        out.mkdir(parents=True, exist_ok=True)
        if report is not None:
            (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            files["report_json"] = str(out / "report.json")
        with contextlib.suppress(NotReadyError, NotFoundError, ServerError):
            (out / "report.html").write_text(client.get_report_html(job_id), encoding="utf-8")
            files["report_html"] = str(out / "report.html")
        if job.artifact is not None:
            result = client.download_artifact(job_id, out, job=job)
            files["artifact"] = str(result.path)
            _say(f"artifact {result.path} ({human_bytes(result.size)}, sha256 {result.sha256[:16]}… verified)")
    code = outcome_code(job) if report is None or job.kind != "dry_run" else _dry_run_outcome(report)
    _say(_outcome_text(job))
    if json_out:
        _emit_json({"job": job.model_dump(mode="json"), "exit_code": int(code), "files": files})
    else:
        typer.echo(job.status + (" (gate missed)" if code == ExitCode.GATE_MISSED else ""))
    raise typer.Exit(int(code))


def _dry_run_outcome(report: dict[str, Any]) -> ExitCode:
    """Print a dry run's summary; it exits like bad input when the full job would hit problems."""
    from prunekit.reporting.dry_run import has_problems, summary_lines

    for line in summary_lines(report):
        _say(line)
    return ExitCode.INVALID_INPUT if has_problems(report) else ExitCode.OK


def _describe(job: Job) -> str:
    gate: dict[GateStatus | None, str] = {
        GateStatus.GATE_MISSED: "  (gate missed)",
        GateStatus.INCONCLUSIVE: "  (gate inconclusive)",
    }
    lines = [f"{job.id}  {job.status}" + gate.get(job.gate_status, "")]
    lines.append(f"  kind {job.kind} · queue {job.queue} · attempts {job.attempts}")
    if not job.terminal:
        lines.append(f"  stage {job.stage or '-'} · {job.percent:.0f}%")
    for label, when in (("created", job.created_at), ("started", job.started_at), ("finished", job.finished_at)):
        if when:
            lines.append(f"  {label:9s}{when.isoformat()}")
    if job.gates:
        lines.append("  gates:")
        lines += [_gate_line(g) for g in job.gates]
    if job.artifact:
        a = job.artifact
        lines.append(f"  artifact {a.name} · {human_bytes(a.size)} · sha256 {a.sha256}")
    if job.error:
        lines.append(f"  error {_error_text(job)}")
    if job.metadata:
        lines.append("  metadata " + ", ".join(f"{k}={v}" for k, v in job.metadata.items()))
    return "\n".join(lines)


def _gate_line(gate: GateResult) -> str:
    reason = f" ({gate.reason})" if gate.reason else ""
    return f"    {'✓' if gate.passed else '✗'} {gate.name}: {_gate_measure(gate)}{reason}"


# ------------------------------------------------------------------ commands


def submit(
    model: Annotated[
        Path,
        typer.Argument(
            help="Model file (TorchScript, torch.export or state-dict), or a Hugging Face save_pretrained folder "
            "(packed into a .tar for upload).",
            exists=True,
            readable=True,
        ),
    ],
    spec: Annotated[
        Path, typer.Option("--spec", "-s", help="Job spec (YAML or JSON).", exists=True, dir_okay=False, readable=True)
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", "-d", help="Dataset file (npz or safetensors).", exists=True, dir_okay=False, readable=True
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the job and exit with its outcome.")] = False,
    out: OutDirOpt = None,
    timeout: TimeoutOpt = None,
    junit: JunitOpt = None,
    summary: SummaryOpt = None,
    webhook_url: Annotated[str | None, typer.Option("--webhook-url", help="POSTed when the job ends.")] = None,
    webhook_event: Annotated[
        list[str] | None,
        typer.Option(
            "--webhook-event",
            help="Send the webhook only for these ends (job.succeeded, job.gate_missed, job.gate_inconclusive, "
            "job.failed, job.canceled); repeatable. Default: all.",
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key", help="Reuse to make a re-run CI step return the same job instead of a new one."
        ),
    ] = None,
    meta: MetaOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Submit the spec as kind dry_run (a check in seconds, nothing pruned), wait, and print what it "
            "found; exit 2 when the full job would hit problems.",
        ),
    ] = False,
    poll_interval: PollOpt = 2.0,
    max_outage: MaxOutageOpt = 300.0,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """Upload a model (and data), submit a job; with --wait, follow it and exit with its outcome."""
    metadata = _metadata(meta, json_out)
    with _errors(json_out, server):
        load_spec(spec)  # fail fast, with field paths, before uploading anything
        spec_data = yaml.safe_load(spec.read_text(encoding="utf-8")) or {}
        if dry_run:
            spec_data = {**spec_data, "kind": "dry_run"}
            wait = True  # its summary is the point of a dry run
        with _client(server, api_key, http_timeout) as client, packed_model(model) as model_upload:
            _say(f"uploading {model_upload.name} ({human_bytes(model_upload.stat().st_size)}) to {server}")
            model_file = _upload(client, model_upload, "model")
            data_id = None
            if data is not None:
                _say(f"uploading {data.name} ({human_bytes(data.stat().st_size)})")
                data_id = _upload(client, data, "data").id
            job = client.submit_job(
                spec_data, model_file.id, data_id, webhook_url, idempotency_key, metadata, webhook_event or None
            )
            _say(f"submitted {job.id} ({job.status}, queue {job.queue})")
            if not (wait or out or junit or summary):
                if json_out:
                    _emit_json(job.model_dump(mode="json"))
                else:
                    typer.echo(job.id)
                return
            _wait_and_finish(
                client,
                job.id,
                timeout=timeout,
                poll_interval=poll_interval,
                max_outage=max_outage,
                out=out,
                junit=junit,
                summary=summary,
                json_out=json_out,
            )


def wait(
    job_id: Annotated[str, typer.Argument(help="Job id (job_...).")],
    out: OutDirOpt = None,
    timeout: TimeoutOpt = None,
    junit: JunitOpt = None,
    summary: SummaryOpt = None,
    poll_interval: PollOpt = 2.0,
    max_outage: MaxOutageOpt = 300.0,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """Wait for an existing job (again) and exit with its outcome."""
    with _errors(json_out, server), _client(server, api_key, http_timeout) as client:
        _wait_and_finish(
            client,
            job_id,
            timeout=timeout,
            poll_interval=poll_interval,
            max_outage=max_outage,
            out=out,
            junit=junit,
            summary=summary,
            json_out=json_out,
        )


def status(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """Show a job: status, stage, gates, artifact (exit 0 whatever its state; `wait` exits with the outcome)."""
    with _errors(json_out, server), _client(server, api_key, http_timeout) as client:
        job = client.get_job(job_id)
        if json_out:
            _emit_json(job.model_dump(mode="json"))
        else:
            typer.echo(_describe(job))


def list_jobs(
    status_filter: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="Only jobs in this status (queued, running, succeeded, failed, canceled); repeat for several.",
            show_default=False,
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="Only jobs of this kind (compress, sensitivity, sweep, search, dry_run)."),
    ] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option(
            "--meta", help="Only jobs with this metadata pair key=value; repeat: all must match.", show_default=False
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the job ids, one a line.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many jobs.", min=1)] = 20,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """List your jobs, newest first, filtered by status, kind and metadata."""
    metadata = _metadata(meta, json_out)
    with _errors(json_out, server), _client(server, api_key, http_timeout) as client:
        jobs: list[Job] = []
        pages = client.iter_jobs(status=status_filter, page_size=min(limit, 100), kind=kind, metadata=metadata)
        for job in pages:
            jobs.append(job)
            if len(jobs) >= limit:
                break
        if json_out:
            _emit_json({"items": [job.model_dump(mode="json") for job in jobs]})
            return
        if quiet:
            for job in jobs:
                typer.echo(job.id)
            return
        if not jobs:
            _say("no jobs")
            return
        for job in jobs:
            typer.echo(_list_line(job))


def _list_line(job: Job) -> str:
    progress = "" if job.terminal else f"{job.stage or '-'} {job.percent:.0f}%"
    gate = {
        GateStatus.PASSED: "gates passed",
        GateStatus.GATE_MISSED: "gate missed",
        GateStatus.INCONCLUSIVE: "gate inconclusive",
        None: "",
    }[job.gate_status]
    created = job.created_at.isoformat()[:19]
    return f"{job.id:<38} {job.status:<10} {job.kind:<12} {created:<20} {progress or gate}".rstrip()


def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """Cancel a queued or running job (a running one stops within seconds)."""
    with _errors(json_out, server), _client(server, api_key, http_timeout) as client:
        try:
            job = client.cancel_job(job_id)
        except ConflictError as exc:
            _fail(ExitCode.INVALID_INPUT, f"cannot cancel {job_id}: {exc.detail or exc.code}", json_out)
        _say(f"{job_id}: cancel requested ({job.status})")
        if json_out:
            _emit_json(job.model_dump(mode="json"))
        else:
            typer.echo(job.status)


def _delete(remove: Callable[[str], object], item_id: str, json_out: bool) -> None:
    """Delete a job or file by id; a conflict (still in use or running) exits with the invalid-input code."""
    try:
        remove(item_id)
    except ConflictError as exc:
        _fail(ExitCode.INVALID_INPUT, f"cannot delete {item_id}: {exc.detail or exc.code}", json_out)
    _say(f"{item_id}: deleted")
    if json_out:
        _emit_json({"id": item_id, "deleted": True})
    else:
        typer.echo(item_id)


def delete(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """Delete a finished job with its artifact and report (cancel a queued or running one first)."""
    with _errors(json_out, server), _client(server, api_key, http_timeout) as client:
        _delete(client.delete_job, job_id, json_out)


def download(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the artifact into.")] = Path("."),
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """Download a job's artifact, resuming an interrupted download, and verify its sha256."""
    with _errors(json_out, server), _client(server, api_key, http_timeout) as client:
        job = client.get_job(job_id)
        if job.artifact is None:
            _fail(ExitCode.INVALID_INPUT, f"{job_id} has no artifact (status {job.status})", json_out)
        result = client.download_artifact(job_id, out, job=job)
        how = "already present" if result.skipped else ("resumed" if result.resumed else "downloaded")
        _say(f"{how}: {result.path} ({human_bytes(result.size)}), sha256 verified")
        if json_out:
            _emit_json(
                {"path": str(result.path), "sha256": result.sha256, "size": result.size, "resumed": result.resumed}
            )
        else:
            typer.echo(str(result.path))


def report(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json, markdown, junit or html.")] = "json",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
) -> None:
    """Print or save a job's report as JSON, markdown, JUnit XML or self-contained HTML."""
    fmt = fmt.lower()
    if fmt not in ("json", "markdown", "md", "junit", "html"):
        _fail(ExitCode.INVALID_INPUT, f"unknown --format {fmt!r}: use json, markdown, junit or html")
    with _errors(False, server), _client(server, api_key, http_timeout) as client:
        try:
            if fmt == "html":
                text = _report_html(client, job_id)
            else:
                data = client.get_report(job_id)
                if fmt == "json":
                    text = json.dumps(data, indent=2) + "\n"
                elif fmt in ("markdown", "md"):
                    from prunekit.reporting.markdown import render_markdown

                    text = render_markdown(data, job_id) + "\n"
                else:
                    from prunekit.reporting.junit import render_junit

                    text = render_junit(data, job_id)
        except NotReadyError:
            job = client.get_job(job_id)
            _fail(ExitCode.INVALID_INPUT, f"{job_id} has no report yet (status {job.status})")
        if out is None:
            sys.stdout.write(text)
        else:
            _write(out, text)
            _say(f"wrote {out}")


def _report_html(client: PrunekitClient, job_id: str) -> str:
    try:
        return client.get_report_html(job_id)
    except (NotFoundError, ServerError):
        # An older server without report.html, or one that cannot render: render here from report.json.
        from prunekit.reporting.html import render_report_html

        return render_report_html(client.get_report(job_id), job_id)


# ------------------------------------------------------------------ files

files_app = typer.Typer(
    help="Your uploaded files: upload, list them, delete them to free your quota.", no_args_is_help=True
)


@files_app.command("list")
def list_files(
    limit: Annotated[int, typer.Option("--limit", help="At most this many files.", min=1)] = 50,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """List your files, newest first, with when each expires and whether a queued or running job uses it."""
    with _errors(json_out, server), _client(server, api_key, http_timeout) as client:
        files = list(itertools.islice(client.iter_files(page_size=min(limit, 200)), limit))
        if json_out:
            _emit_json({"items": [f.model_dump(mode="json") for f in files]})
            return
        if not files:
            _say("no files")
        for info in files:
            typer.echo(_file_line(info))


def _file_line(info: FileInfo) -> str:
    expires = info.expires_at.isoformat()[:19] if info.expires_at else "-"
    use = "in use" if info.in_use else ""
    return f"{info.id:<38} {info.kind:<6} {human_bytes(info.size):>10} {expires:<20} {use:<7} {info.name}".rstrip()


@files_app.command("upload")
def upload_file(
    path: Annotated[Path, typer.Argument(help="File to upload.", exists=True, dir_okay=False, readable=True)],
    kind: Annotated[str, typer.Option("--kind", help="model or data.")] = "model",
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """Upload a file once (large ones in resumable chunks) and print its id, for model_file_id or data_file_id."""
    if kind not in ("model", "data"):
        _fail(ExitCode.INVALID_INPUT, f"unknown --kind {kind!r}: use model or data", json_out)
    with _errors(json_out, server), _client(server, api_key, http_timeout) as client:
        _say(f"uploading {path.name} ({human_bytes(path.stat().st_size)}) to {server}")
        info = _upload(client, path, kind)
        _say(f"{info.id}: {human_bytes(info.size)}, sha256 {info.sha256}")
        if json_out:
            _emit_json(info.model_dump(mode="json"))
        else:
            typer.echo(info.id)


@files_app.command("delete")
def delete_file(
    file_id: Annotated[str, typer.Argument(help="File id.")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    http_timeout: HttpTimeoutOpt = 60.0,
    json_out: JsonOpt = False,
) -> None:
    """Delete a file and free its bytes of your quota (not while a queued or running job uses it)."""
    with _errors(json_out, server), _client(server, api_key, http_timeout) as client:
        _delete(client.delete_file, file_id, json_out)


def register(app: typer.Typer) -> None:
    """Attach the client subcommands to the main app."""
    panel = "Server (client)"
    app.command("submit", rich_help_panel=panel)(submit)
    app.command("wait", rich_help_panel=panel)(wait)
    app.command("status", rich_help_panel=panel)(status)
    app.command("list", rich_help_panel=panel)(list_jobs)
    app.command("cancel", rich_help_panel=panel)(cancel)
    app.command("delete", rich_help_panel=panel)(delete)
    app.command("download", rich_help_panel=panel)(download)
    app.command("report", rich_help_panel=panel)(report)
    app.add_typer(files_app, name="files", rich_help_panel=panel)
