"""SQL for per-key webhook secret generations (rotation is one conditional UPDATE or an INSERT)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobstore.db import affected_rows
from jobstore.models import WebhookSecretRecord


def get(session: Session, owner: str) -> WebhookSecretRecord | None:
    stmt = select(WebhookSecretRecord).where(WebhookSecretRecord.owner == owner)
    return session.scalar(stmt.execution_options(populate_existing=True))


def rotate(session: Session, owner: str, now: datetime) -> WebhookSecretRecord:
    """Move the key to its next generation (the first rotation creates generation 1); commits."""
    stmt = (
        update(WebhookSecretRecord)
        .where(WebhookSecretRecord.owner == owner)
        .values(generation=WebhookSecretRecord.generation + 1, rotated_at=now)
    )
    if affected_rows(session, stmt) == 0:
        session.add(WebhookSecretRecord(owner=owner, generation=1, rotated_at=now))
    try:
        session.commit()
    except IntegrityError:  # a concurrent first rotation won: rotate past it
        session.rollback()
        return rotate(session, owner, now)
    row = get(session, owner)
    if row is None:  # deleted between the two statements; only an operator does that
        raise LookupError(f"webhook secret of {owner} vanished during rotation")
    return row
