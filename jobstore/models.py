"""ORM tables: files, jobs, job events, sweep trials and stage durations (the job store of record)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jobstore.db import Base, UTCDateTime, enum_column, utcnow
from jobstore.settings import OWNER_MAX_LENGTH
from prunekit.spec.api import EventKind, GateStatus, JobStatus, TrialStatus, UploadState, WebhookState

# SQLite only autoincrements INTEGER PRIMARY KEY; BigInteger elsewhere.
PK = BigInteger().with_variant(Integer(), "sqlite")
# The largest value either holds (64-bit signed): a key from a request beyond it cannot be compared to a row.
PK_MAX = 2**63 - 1


class FileRecord(Base):
    __tablename__ = "files"

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    owner: Mapped[str] = mapped_column(String(OWNER_MAX_LENGTH), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255))
    # Uploaded inline with a job submission: deleted with that job.
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobRecord(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_pk", "owner", "pk"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
    )

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    owner: Mapped[str] = mapped_column(String(OWNER_MAX_LENGTH))
    status: Mapped[JobStatus] = mapped_column(enum_column(JobStatus), default=JobStatus.QUEUED)
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    percent: Mapped[float] = mapped_column(Float, default=0.0)
    kind: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_file_id: Mapped[str] = mapped_column(String(40))
    data_file_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_state: Mapped[WebhookState | None] = mapped_column(enum_column(WebhookState), nullable=True)
    # Which webhook event types the job's end is sent for (jobstore.webhooks.events); null: all of them.
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    gate_status: Mapped[GateStatus | None] = mapped_column(enum_column(GateStatus), nullable=True)
    gates: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    artifact_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    artifact_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    artifact_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    report_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    report_html_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Who runs it now: a random token per attempt, valid until lease_expires_at unless renewed.
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Read-only: the repository writes and deletes the rows; selectin loads a whole list's pairs in one query.
    meta_rows: Mapped[list[JobMetadataRecord]] = relationship(
        viewonly=True, lazy="selectin", order_by="JobMetadataRecord.key"
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    seq: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[EventKind] = mapped_column(enum_column(EventKind))
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class StageDuration(Base):
    """Seconds per stage of finished jobs, kept after a job is deleted (they feed /metrics)."""

    __tablename__ = "stage_durations"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    seconds: Mapped[float] = mapped_column(Float)


class JobTrial(Base):
    """One trial of a sweep job: claimed and run by any worker (the job's own task or a `run_trial` task)."""

    __tablename__ = "job_trials"
    __table_args__ = (
        UniqueConstraint("job_id", "idx", name="uq_job_trials_job_idx"),
        Index("ix_job_trials_job_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[TrialStatus] = mapped_column(enum_column(TrialStatus), default=TrialStatus.PENDING)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Who ran (or runs) it: "<hostname>:<pid>" of the worker process.
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Storage prefix holding the trial's report.json and artifact once done.
    result_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookSecretRecord(Base):
    """Which generation of its signing secret an API key uses (the secret itself is derived, never stored)."""

    __tablename__ = "webhook_secrets"

    owner: Mapped[str] = mapped_column(String(OWNER_MAX_LENGTH), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    rotated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobMetadataRecord(Base):
    """One metadata pair of a job (git SHA, branch, PR): a row each, so lists can filter on key and value."""

    __tablename__ = "job_metadata"
    __table_args__ = (Index("ix_job_metadata_key_value", "key", "value"),)

    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class WebhookDeliveryRecord(Base):
    """One attempt to deliver a job's webhook (the job's delivery log), deleted with the job."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_job_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event_type: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(96))
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[float] = mapped_column(Float)


class UploadSessionRecord(Base):
    """A resumable upload (/v1/uploads): its chunks are staged by the storage until it is published as a file."""

    __tablename__ = "upload_sessions"
    __table_args__ = (Index("ix_upload_sessions_owner_state", "owner", "state"),)

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    owner: Mapped[str] = mapped_column(String(OWNER_MAX_LENGTH))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    # The sha256 announced at creation, checked on completion.
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    chunk_size: Mapped[int] = mapped_column(BigInteger)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[UploadState] = mapped_column(enum_column(UploadState), default=UploadState.OPEN)
    # The file it becomes, id chosen up front: an S3 multipart upload is made for its final key.
    file_id: Mapped[str] = mapped_column(String(40))
    storage_key: Mapped[str] = mapped_column(String(255))
    # The storage's handle on the staged parts (the S3 UploadId; null for local storage) and the parts it made.
    staging_ref: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    parts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
