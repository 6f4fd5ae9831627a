"""Decisions about a job's webhook deliveries: the delivery log's pages and when a redelivery is allowed."""

from __future__ import annotations

from sqlalchemy.orm import Session

from jobstore import lifecycle
from jobstore.broker import Broker
from jobstore.models import JobRecord, WebhookDeliveryRecord
from jobstore.repositories import jobs as jobs_repo
from jobstore.repositories import webhook_deliveries as repository
from jobstore.webhooks import events
from prunekit.spec.api import TERMINAL_STATUSES, EventKind, WebhookDelivery, WebhookDeliveryList, WebhookRedelivery
from service.core.errors import InvalidState
from service.jobs.service import decode_cursor, encode_cursor


def delivery_view(row: WebhookDeliveryRecord) -> WebhookDelivery:
    return WebhookDelivery.model_validate(row, from_attributes=True)


def list_deliveries(session: Session, job: JobRecord, cursor: str | None, limit: int) -> WebhookDeliveryList:
    """One page of the job's delivery log, oldest attempt first."""
    after = decode_cursor(cursor) if cursor else 0
    rows = repository.list_for_job(session, job.id, after, limit + 1)
    items = [delivery_view(r) for r in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return WebhookDeliveryList(items=items, next_cursor=next_cursor)


def redeliver(session: Session, broker: Broker, job: JobRecord) -> WebhookRedelivery:
    """Queue the signed delivery of the job's end again; 409 unless it has ended with a webhook that wants it."""
    if not job.webhook_url:
        raise InvalidState(f"job {job.id} has no webhook_url; there is nothing to redeliver")
    if job.status not in TERMINAL_STATUSES:
        raise InvalidState(f"job {job.id} is {job.status}; its webhook is sent once it has ended")
    if not events.wanted(job):
        raise InvalidState(f"job {job.id} ended as {events.payload_type(job)}, which its webhook_events leave out")
    jobs_repo.add_event(session, job.id, EventKind.LOG, "webhook redelivery requested")
    # notify commits (pending first); a broker outage leaves it pending, and the sweeper sends it later.
    lifecycle.notify(session, broker, job.id)
    session.refresh(job)
    return WebhookRedelivery(
        job_id=job.id,
        event_type=events.payload_type(job),
        message_id=events.message_id(job),
        webhook_state=job.webhook_state,
    )
