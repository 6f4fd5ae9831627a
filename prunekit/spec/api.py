"""The API's response bodies and closed value sets, defined once (docs/design/api-contract.md).

The service uses these as `response_model`, the job store builds them from its rows, the client parses
with them and the client tests' fake server builds its bodies from them, so the shapes cannot drift.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prunekit.spec.report import GateResult


class JobStatus(StrEnum):
    """Where a job is in its lifecycle (docs/design/architecture.md has the state diagram)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class TrialStatus(StrEnum):
    """One trial of a sweep job."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


FINISHED_TRIALS: frozenset[TrialStatus] = frozenset({TrialStatus.DONE, TrialStatus.FAILED})


class Stage(StrEnum):
    """The stages a job reports progress in, in the order a compress job runs them."""

    LOAD = "load"
    BASELINE = "baseline"
    ANALYZE = "analyze"
    PRUNE = "prune"
    FINETUNE = "finetune"
    SAVE = "save"
    EVALUATE = "evaluate"
    QUANTIZE = "quantize"
    REPORT = "report"
    TRIALS = "trials"


class EventKind(StrEnum):
    PROGRESS = "progress"
    LOG = "log"
    METRIC = "metric"
    STATE = "state"


class GateStatus(StrEnum):
    """A succeeded job's gates: all passed, one missed, or none missed but a timing gate could not tell."""

    PASSED = "passed"
    GATE_MISSED = "gate_missed"
    INCONCLUSIVE = "inconclusive"  # a latency / speedup gate's interval straddles its threshold (see the report)


class WebhookState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookEventType(StrEnum):
    """What a job's end is to its webhook; `job.gate_missed` is a success that missed a gate (sent as succeeded)."""

    JOB_SUCCEEDED = "job.succeeded"
    JOB_GATE_MISSED = "job.gate_missed"
    JOB_GATE_INCONCLUSIVE = "job.gate_inconclusive"
    JOB_FAILED = "job.failed"
    JOB_CANCELED = "job.canceled"


class ErrorCode(StrEnum):
    """Why a job failed: the engine's codes (input a user can fix) and the worker's (infrastructure)."""

    ENGINE_ERROR = "engine_error"
    INVALID_MODEL = "invalid_model"
    UNSAFE_MODEL = "unsafe_model"
    INVALID_DATA = "invalid_data"
    INVALID_SPEC = "invalid_spec"
    UNSUPPORTED = "unsupported"
    RESOURCE_LIMIT = "resource_limit"
    CANCELED = "canceled"
    TIME_LIMIT = "time_limit"
    INPUT_MISSING = "input_missing"
    WORKER_LOST = "worker_lost"
    INTERNAL_ERROR = "internal_error"


class FileKind(StrEnum):
    """What an uploaded file holds."""

    MODEL = "model"
    DATA = "data"


class JobError(BaseModel):
    code: ErrorCode
    message: str


class Artifact(BaseModel):
    name: str
    size: int
    sha256: str


class JobLinks(BaseModel):
    """Paths relative to the server's root; present only when the target exists."""

    self: str
    artifact: str | None
    report: str | None
    report_html: str | None
    events: str
    cancel: str


def job_links(job_id: str, has_artifact: bool, has_report: bool) -> JobLinks:
    """A job's links (paths from the server's root); artifact and report links only when those exist."""
    base = f"/v1/jobs/{job_id}"
    return JobLinks(
        self=base,
        artifact=f"{base}/artifact" if has_artifact else None,
        report=f"{base}/report" if has_report else None,
        report_html=f"{base}/report.html" if has_report else None,
        events=f"{base}/events",
        cancel=f"{base}/cancel",
    )


class Job(BaseModel):
    id: str
    status: JobStatus
    stage: str | None
    percent: float
    kind: str
    queue: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    attempts: int
    error: JobError | None
    gate_status: GateStatus | None
    gates: list[GateResult]
    model_file_id: str
    data_file_id: str | None
    spec: dict[str, Any]
    artifact: Artifact | None
    links: JobLinks
    # Set at submit (git SHA, branch, PR ...); GET /v1/jobs filters on it with meta=key:value.
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status.terminal


class JobList(BaseModel):
    items: list[Job]
    next_cursor: str | None


class Event(BaseModel):
    seq: int
    ts: datetime
    kind: EventKind
    stage: str | None
    percent: float | None
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class EventList(BaseModel):
    items: list[Event]
    next_cursor: str | None = Field(default=None, description="The next page's cursor; null once caught up.")
    next_after: int = Field(description="The last seq returned (older clients pass it back as `after`).")


class WebhookDelivery(BaseModel):
    """One attempt to deliver a job's webhook: the delivery log of GET /v1/jobs/{id}/webhook-deliveries."""

    id: int
    attempt: int
    created_at: datetime
    event_type: str
    message_id: str
    ok: bool
    status_code: int | None = Field(description="The receiver's HTTP status; null when no answer came.")
    error: str | None = Field(description="Why it failed, in prunekit's words; null when delivered.")
    duration_ms: float


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDelivery]
    next_cursor: str | None


class WebhookRedelivery(BaseModel):
    """The answer to a redeliver call: the message that was queued again."""

    job_id: str
    event_type: str
    message_id: str
    webhook_state: WebhookState


class FileInfo(BaseModel):
    """An uploaded model or dataset: POST and GET /v1/files, and the items of the file list."""

    id: str
    sha256: str
    size: int
    name: str
    kind: FileKind
    created_at: datetime
    # Optional only for clients of servers from before file expiry, which send neither.
    expires_at: datetime | None = Field(
        default=None, description="When it is removed, unless a queued or running job still uses it."
    )
    in_use: bool | None = Field(
        default=None, description="A queued or running job uses it: it is neither removed nor deletable now."
    )


class FileList(BaseModel):
    items: list[FileInfo]
    next_cursor: str | None


class UploadState(StrEnum):
    """Where a resumable upload stands: taking chunks, being verified and published, or a file."""

    OPEN = "open"
    COMPLETING = "completing"
    DONE = "done"


SHA256_PATTERN = r"^[0-9a-f]{64}$"


class UploadCreate(BaseModel):
    """POST /v1/uploads: announce a file that is sent in chunks (PUT with Content-Range)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255, description="The file's name (for display only).")
    kind: FileKind = FileKind.MODEL
    size: int = Field(ge=1, description="The file's size in bytes.")
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN, description="Checked when the upload completes.")


class UploadComplete(BaseModel):
    """POST /v1/uploads/{id}/complete: the sha256 the client computed, checked against the received bytes."""

    model_config = ConfigDict(extra="forbid")

    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)


class Upload(BaseModel):
    """A resumable upload: how many bytes the server holds (`offset`) and how big each chunk must be."""

    id: str
    name: str
    kind: FileKind
    size: int
    offset: int = Field(description="Bytes received so far; the next chunk starts here.")
    chunk_size: int = Field(description="Every chunk but the last has exactly this many bytes.")
    state: UploadState
    sha256: str | None = Field(description="The sha256 announced when the upload was created, if any.")
    created_at: datetime
    expires_at: datetime = Field(description="When an upload that receives nothing more is discarded.")
    file_id: str | None = Field(default=None, description="The published file, once the upload is done.")


class ProblemFieldError(BaseModel):
    """One field's error in a problem's `errors` list."""

    model_config = ConfigDict(extra="allow")

    loc: str
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem details body, sent as application/problem+json by every error response."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str
    errors: list[ProblemFieldError] | None = None
