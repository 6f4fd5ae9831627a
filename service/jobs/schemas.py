"""Request and response bodies of the jobs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.models import JobEvent, JobRecord

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})


class JobCreate(BaseModel):
    """JSON form of a submission (the multipart form carries the same fields)."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any]
    model_file_id: str
    data_file_id: str | None = None
    webhook_url: str | None = None


class JobError(BaseModel):
    code: str
    message: str


class Artifact(BaseModel):
    name: str
    size: int
    sha256: str


class JobLinks(BaseModel):
    self: str
    artifact: str | None
    report: str | None
    report_html: str | None
    events: str
    cancel: str


class JobOut(BaseModel):
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
    gate_status: Literal["passed", "gate_missed"] | None
    gates: list[dict[str, Any]]
    model_file_id: str
    data_file_id: str | None
    spec: dict[str, Any]
    artifact: Artifact | None
    links: JobLinks

    @classmethod
    def of(cls, job: JobRecord) -> JobOut:
        base = f"/v1/jobs/{job.id}"
        has_artifact = job.artifact_key is not None and job.status == "succeeded"
        has_report = job.report_key is not None and job.status == "succeeded"
        return cls(
            id=job.id,
            status=job.status,
            stage=job.stage,
            percent=job.percent,
            kind=job.kind,
            queue=job.queue,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            attempts=job.attempts,
            error=JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None,
            gate_status=job.gate_status,
            gates=job.gates or [],
            model_file_id=job.model_file_id,
            data_file_id=job.data_file_id,
            spec=job.spec,
            artifact=Artifact(
                name=job.artifact_name or "", size=job.artifact_size or 0, sha256=job.artifact_sha256 or ""
            )
            if has_artifact
            else None,
            links=JobLinks(
                self=base,
                artifact=f"{base}/artifact" if has_artifact else None,
                report=f"{base}/report" if has_report else None,
                report_html=f"{base}/report.html" if has_report else None,
                events=f"{base}/events",
                cancel=f"{base}/cancel",
            ),
        )


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class EventOut(BaseModel):
    seq: int
    ts: datetime
    kind: Literal["progress", "log", "metric", "state"]
    stage: str | None
    percent: float | None
    message: str
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, ev: JobEvent) -> EventOut:
        return cls(
            seq=ev.seq,
            ts=ev.ts,
            kind=ev.kind,
            stage=ev.stage,
            percent=ev.percent,
            message=ev.message,
            data=ev.data or {},
        )


class EventList(BaseModel):
    items: list[EventOut]
    next_after: int
