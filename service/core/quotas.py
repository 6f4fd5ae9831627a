"""The quotas of jobstore/quotas.py as problems: 429 with Retry-After, 422 for a spec over the server's limits."""

from __future__ import annotations

from sqlalchemy.orm import Session

from jobstore import quotas
from jobstore.settings import Settings
from prunekit.spec import JobSpec
from service.core.errors import QuotaExceeded, ValidationProblem


def _raise(breach: quotas.QuotaBreach | None) -> None:
    if breach is not None:
        raise QuotaExceeded(breach.message, breach.retry_after)


def check_upload(session: Session, settings: Settings, owner: str, new_bytes: int) -> None:
    """Lock the key's quota for this transaction and refuse `new_bytes` more past its stored-bytes quota."""
    quotas.lock_owner(session, owner)
    _raise(quotas.storage_breach(session, settings, owner, new_bytes))


def check_room(session: Session, settings: Settings, owner: str) -> None:
    """429 before an upload's body is read when the key has no byte left (no lock: the body may take minutes)."""
    _raise(quotas.storage_breach(session, settings, owner, 1))


def check_submit(session: Session, settings: Settings, owner: str, spec: JobSpec, new_bytes: int = 0) -> None:
    """Refuse a spec over the server's limits (422), then a job past the key's quotas (429); locks the key."""
    limits = quotas.spec_limits(spec, settings)
    if limits:
        raise ValidationProblem(
            "; ".join(f"{lim.loc}: {lim.message}" for lim in limits),
            [{"loc": lim.loc, "msg": lim.message} for lim in limits],
        )
    quotas.lock_owner(session, owner)
    _raise(quotas.jobs_breach(session, settings, owner))
    _raise(quotas.storage_breach(session, settings, owner, new_bytes))
