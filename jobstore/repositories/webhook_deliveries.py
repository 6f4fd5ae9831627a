"""SQL for the webhook delivery log: one row per attempt, listed oldest first."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobstore.models import WebhookDeliveryRecord


def add(session: Session, row: WebhookDeliveryRecord) -> None:
    """Record one attempt (in the caller's transaction)."""
    session.add(row)


def list_for_job(session: Session, job_id: str, after_id: int, limit: int) -> Sequence[WebhookDeliveryRecord]:
    """The job's attempts with an id above `after_id`, oldest first."""
    stmt = (
        select(WebhookDeliveryRecord)
        .where(WebhookDeliveryRecord.job_id == job_id, WebhookDeliveryRecord.id > after_id)
        .order_by(WebhookDeliveryRecord.id)
        .limit(limit)
    )
    return session.scalars(stmt).all()
