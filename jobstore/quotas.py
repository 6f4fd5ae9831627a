"""Per-key quotas (active jobs, stored bytes) and the spec's limits, counted from the job store.

Counting and inserting race between two concurrent requests of one key, so every check runs after
`lock_owner`, in the transaction that then inserts: the second request waits and counts the first one's row.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jobstore.models import JobRecord
from jobstore.repositories import files as files_repo
from jobstore.settings import Settings
from prunekit.spec import JobSpec

# First half of the PostgreSQL advisory lock key (the second is the owner's hash); any constant not used elsewhere.
_PG_LOCK_CLASS = 7_314_160


@dataclass(frozen=True)
class QuotaBreach:
    """Why a request is over its key's quota, and how long to wait before trying again."""

    message: str
    retry_after: int


@dataclass(frozen=True)
class SpecLimit:
    """A spec field over the server's limit."""

    loc: str
    message: str


def lock_owner(session: Session, owner: str) -> None:
    """Serialize quota checks, uploads, deletes and expiry of one key until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(owner.encode()) - 2**31  # a signed 32-bit int, the same in every process
        session.execute(text("SELECT pg_advisory_xact_lock(:c, :k)"), {"c": _PG_LOCK_CLASS, "k": key})
    else:
        # SQLite has one writer at a time: a write that changes nothing takes that lock until commit.
        session.execute(text("UPDATE files SET pk = pk WHERE 1 = 0"))


def active_jobs(session: Session, owner: str) -> int:
    stmt = select(func.count()).where(JobRecord.owner == owner, JobRecord.status.in_(files_repo.ACTIVE_STATUSES))
    return int(session.scalar(stmt) or 0)


def stored_bytes(session: Session, owner: str) -> int:
    """Bytes of the owner's uploaded files plus its jobs' artifacts."""
    artifacts = select(func.coalesce(func.sum(JobRecord.artifact_size), 0)).where(JobRecord.owner == owner)
    return files_repo.stored_file_bytes(session, owner) + int(session.scalar(artifacts) or 0)


def storage_breach(session: Session, settings: Settings, owner: str, new_bytes: int) -> QuotaBreach | None:
    """A breach when storing `new_bytes` more would take the owner past its stored-bytes quota."""
    used, limit = stored_bytes(session, owner), settings.max_stored_bytes_per_key
    if used + new_bytes <= limit:
        return None
    return QuotaBreach(
        f"this API key stores {used} bytes of files and artifacts; {new_bytes} more would pass its quota of "
        f"{limit} bytes. Delete files (prunekit files delete) or finished jobs, or wait for files to expire",
        settings.quota_retry_after,
    )


def jobs_breach(session: Session, settings: Settings, owner: str) -> QuotaBreach | None:
    """A breach when the owner already has its quota of queued and running jobs."""
    active, limit = active_jobs(session, owner), settings.max_active_jobs_per_key
    if active < limit:
        return None
    return QuotaBreach(
        f"this API key has {active} queued or running jobs, its quota is {limit}; submit again when one has ended",
        settings.quota_retry_after,
    )


def spec_limits(spec: JobSpec, settings: Settings) -> list[SpecLimit]:
    """The spec's fields over this server's limits (epochs, trials of a sweep)."""
    out: list[SpecLimit] = []
    for name in ("epochs", "regularize_epochs"):
        value = getattr(spec.finetune, name)
        if value > settings.max_finetune_epochs:
            msg = f"at most {settings.max_finetune_epochs} epochs on this server, not {value}"
            out.append(SpecLimit(f"finetune.{name}", msg))
    if spec.kind == "sweep" and spec.sweep is not None:
        s = spec.sweep
        trials = len(s.sparsities) * len(s.regularizers) * len(s.schedules) * s.seeds
        if trials > settings.max_sweep_trials:
            msg = f"the sweep has {trials} trials (sparsities x regularizers x schedules x seeds); this server runs "
            out.append(SpecLimit("sweep", msg + f"at most {settings.max_sweep_trials}"))
    return out
