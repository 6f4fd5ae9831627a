"""Typed shapes of the API's JSON bodies (docs/design/api-contract.md); plain dicts at runtime."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})


class FileInfo(TypedDict):
    id: str
    sha256: str
    size: int
    name: str
    kind: str
    created_at: str


class JobErrorInfo(TypedDict):
    code: str
    message: str


class GateInfo(TypedDict):
    name: str
    value: float | None
    threshold: float
    comparison: str
    passed: bool
    reason: NotRequired[str]


class ArtifactInfo(TypedDict):
    name: str
    size: int
    sha256: str


class Job(TypedDict):
    id: str
    status: str
    stage: NotRequired[str | None]
    percent: NotRequired[float]
    kind: NotRequired[str]
    queue: NotRequired[str]
    created_at: NotRequired[str]
    started_at: NotRequired[str | None]
    finished_at: NotRequired[str | None]
    updated_at: NotRequired[str]
    attempts: NotRequired[int]
    error: NotRequired[JobErrorInfo | None]
    gate_status: NotRequired[str | None]
    gates: NotRequired[list[GateInfo]]
    model_file_id: NotRequired[str]
    data_file_id: NotRequired[str | None]
    spec: NotRequired[dict[str, Any]]
    artifact: NotRequired[ArtifactInfo | None]
    links: NotRequired[dict[str, str | None]]


class JobPage(TypedDict):
    items: list[Job]
    next_cursor: str | None


class Event(TypedDict):
    seq: int
    ts: str
    kind: str
    stage: NotRequired[str | None]
    percent: NotRequired[float | None]
    message: NotRequired[str]
    data: NotRequired[dict[str, Any]]


class EventPage(TypedDict):
    items: list[Event]
    next_after: int
