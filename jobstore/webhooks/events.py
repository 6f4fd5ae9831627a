"""Which webhook event a job's end is, and whether the job's event filter (`webhook_events`) wants it."""

from __future__ import annotations

from collections.abc import Iterable

from jobstore.models import JobRecord
from prunekit.spec.api import GateStatus, JobStatus, WebhookEventType

ALL_EVENTS: tuple[WebhookEventType, ...] = tuple(WebhookEventType)


def payload_type(job: JobRecord) -> str:
    """The `type` of the payload: `job.<status>` (a gate-missed success is still `job.succeeded`)."""
    return f"job.{job.status}"


def message_id(job: JobRecord) -> str:
    """The webhook-id of the job's end: the same for every attempt and redelivery, so receivers can dedupe."""
    return f"msg_{job.id}_{job.status}"


def event_types(job: JobRecord) -> set[str]:
    """The event types a job's end matches: its status, plus `job.gate_missed` / `job.gate_inconclusive`."""
    types = {payload_type(job)}
    if job.status == JobStatus.SUCCEEDED and job.gate_status == GateStatus.GATE_MISSED:
        types.add(WebhookEventType.JOB_GATE_MISSED.value)
    if job.status == JobStatus.SUCCEEDED and job.gate_status == GateStatus.INCONCLUSIVE:
        types.add(WebhookEventType.JOB_GATE_INCONCLUSIVE.value)
    return types


def normalized(events: Iterable[WebhookEventType] | None) -> list[str] | None:
    """The filter as stored: None (every event) or the distinct types in a stable order."""
    if events is None:
        return None
    chosen = {WebhookEventType(e) for e in events}
    return [e.value for e in ALL_EVENTS if e in chosen]


def wanted(job: JobRecord) -> bool:
    """Whether the job's filter asks for the event its end is (no filter: every terminal event)."""
    if job.webhook_events is None:
        return True
    return bool(event_types(job) & set(job.webhook_events))
