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
    REPORT = "report"
    TRIALS = "trials"


class EventKind(StrEnum):
    PROGRESS = "progress"
    LOG = "log"
    METRIC = "metric"
    STATE = "state"


class GateStatus(StrEnum):
    PASSED = "passed"
    GATE_MISSED = "gate_missed"


class WebhookState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


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
    next_after: int


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
