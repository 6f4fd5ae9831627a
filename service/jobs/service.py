"""Decisions about jobs: validation, idempotency, queue choice, cancel and delete rules."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobstore import lifecycle
from jobstore.broker import Broker
from jobstore.db import utcnow
from jobstore.ids import new_id
from jobstore.lifecycle import CancelOutcome
from jobstore.models import JobRecord
from jobstore.repositories import files as files_repo
from jobstore.repositories import jobs as repository
from jobstore.repositories import webhook_secrets
from jobstore.settings import Settings
from jobstore.storage import Storage
from jobstore.webhooks import events as webhook_events
from jobstore.webhooks.policy import WebhookRefused, check_url
from jobstore.webhooks.secrets import NO_SECRET
from prunekit.spec import JobSpec, SpecError, parse_spec
from prunekit.spec.api import TERMINAL_STATUSES, EventKind, JobStatus, WebhookEventType
from prunekit.spec.loading import parse_spec_text
from service.core import quotas
from service.core.cursors import decode_cursor as decode_cursor  # re-exported for the router and tests
from service.core.cursors import encode_cursor as encode_cursor
from service.core.errors import IdempotencyMismatch, InvalidState, ValidationProblem
from service.core.multipart import UploadedPart
from service.files import service as files_service

log = logging.getLogger(__name__)


@dataclass
class Submission:
    """One submission, whichever form it came in."""

    spec: JobSpec
    model_file_id: str | None
    data_file_id: str | None
    webhook_url: str | None
    request_hash: str
    inline_model: UploadedPart | None = None
    inline_data: UploadedPart | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    webhook_events: list[WebhookEventType] | None = None


def canonical_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_spec_or_422(data: dict[str, Any] | str) -> JobSpec:
    try:
        return parse_spec_text(data) if isinstance(data, str) else parse_spec(data)
    except SpecError as exc:
        errors = [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors] or [{"loc": "spec", "msg": str(exc)}]
        raise ValidationProblem(str(exc), errors) from None


def choose_queue(spec: JobSpec, settings: Settings) -> str:
    if spec.queue != "auto":
        return spec.queue
    if spec.device == "cuda":
        return "gpu"
    return settings.default_queue


def check_webhook(url: str | None, settings: Settings) -> None:
    if url is None:
        return
    try:
        check_url(url, settings)
    except WebhookRefused as exc:
        raise ValidationProblem(str(exc), [{"loc": "webhook_url", "msg": str(exc)}]) from None


def check_webhook_events(url: str | None, events: list[WebhookEventType] | None) -> None:
    """An event filter only means something with a webhook to send."""
    if events is not None and url is None:
        msg = "webhook_events needs a webhook_url"
        raise ValidationProblem(msg, [{"loc": "webhook_events", "msg": msg}])


def _check_webhook_secret(session: Session, owner: str, url: str | None) -> None:
    if url is not None and webhook_secrets.get(session, owner) is None:
        raise ValidationProblem(NO_SECRET, [{"loc": "webhook_url", "msg": NO_SECRET}])


def _check_file(session: Session, owner: str, file_id: str | None, loc: str) -> None:
    if file_id is not None and files_repo.get_file(session, file_id, owner) is None:
        raise ValidationProblem(f"no file {file_id}", [{"loc": loc, "msg": "no such file"}])


def _inline_bytes(sub: Submission) -> int:
    return sum(part.size for part in (sub.inline_model, sub.inline_data) if part is not None)


def _existing_for_key(session: Session, owner: str, key: str, request_hash: str) -> JobRecord | None:
    job = repository.find_by_idempotency_key(session, owner, key)
    if job is not None and job.request_hash != request_hash:
        raise IdempotencyMismatch(f"Idempotency-Key '{key}' was used for a different request (job {job.id})")
    return job


def create_job(
    session: Session, settings: Settings, owner: str, sub: Submission, idempotency_key: str | None
) -> tuple[JobRecord, bool]:
    """Store a new queued job (or return the one this idempotency key already made); True if new."""
    if idempotency_key is not None:
        existing = _existing_for_key(session, owner, idempotency_key, sub.request_hash)
        if existing is not None:
            return existing, False
    # Before the file checks: the key's lock also keeps expiry and deletes from removing the files checked next.
    quotas.check_submit(session, settings, owner, sub.spec, _inline_bytes(sub))
    _check_file(session, owner, sub.model_file_id, "model_file_id")
    _check_file(session, owner, sub.data_file_id, "data_file_id")
    check_webhook(sub.webhook_url, settings)
    check_webhook_events(sub.webhook_url, sub.webhook_events)
    _check_webhook_secret(session, owner, sub.webhook_url)

    model_id = sub.model_file_id
    data_id = sub.data_file_id
    if sub.inline_model is not None:
        model_id = files_service.record_upload(session, owner, sub.inline_model, "model", inline=True).id
    if sub.inline_data is not None:
        data_id = files_service.record_upload(session, owner, sub.inline_data, "data", inline=True).id
    if model_id is None:
        raise ValidationProblem("a model is required", [{"loc": "model_file_id", "msg": "field required"}])

    now = utcnow()
    job = JobRecord(
        id=new_id("job"),
        owner=owner,
        status=JobStatus.QUEUED,
        percent=0.0,
        kind=sub.spec.kind,
        queue=choose_queue(sub.spec, settings),
        spec=sub.spec.model_dump(mode="json"),
        model_file_id=model_id,
        data_file_id=data_id,
        webhook_url=sub.webhook_url,
        webhook_events=webhook_events.normalized(sub.webhook_events),
        idempotency_key=idempotency_key,
        request_hash=sub.request_hash,
        created_at=now,
        updated_at=now,
        attempts=0,
        gates=[],
        cancel_requested=False,
    )
    try:
        repository.insert_job(session, job)
        repository.add_metadata(session, job.id, sub.metadata)
        repository.add_event(session, job.id, EventKind.STATE, "queued", ts=now)
        session.commit()
    except IntegrityError:
        # A concurrent request with the same idempotency key won the insert.
        session.rollback()
        if idempotency_key is None:
            raise
        existing = _existing_for_key(session, owner, idempotency_key, sub.request_hash)
        if existing is None:
            raise
        return existing, False
    return job, True


def enqueue(session: Session, broker: Broker, job: JobRecord) -> None:
    """Send the job's message; if the broker is down the job stays queued and workers resend it later.

    Sent first, marked after: a crash in between means a duplicate message at worst, which the
    worker's claim turns into a no-op, never a job that nobody will run.
    """
    try:
        broker.send_job(job.id, job.queue)
    except Exception:  # broker outage: the job is safe in the database and the sweeper resends it
        log.exception("could not send job %s to the broker; it will be resent", job.id)
        return
    repository.mark_enqueued(session, job.id, utcnow())
    session.commit()


def cancel_job(session: Session, broker: Broker, job: JobRecord) -> JobRecord:
    """Cancel a queued job now, or flag a running one; 409 once it is finished (jobstore.lifecycle decides)."""
    outcome = lifecycle.request_cancel(session, job, utcnow())
    if outcome is CancelOutcome.ALREADY_ENDED:
        raise InvalidState(f"job {job.id} is already {job.status}")
    if outcome is CancelOutcome.RACING:
        raise InvalidState(f"job {job.id} is {job.status}; try the cancel again")
    session.commit()
    if outcome is CancelOutcome.CANCELED:
        lifecycle.notify(session, broker, job.id)
    session.refresh(job)
    return job


def delete_job(session: Session, storage: Storage, job: JobRecord) -> None:
    if job.status not in TERMINAL_STATUSES:
        raise InvalidState(f"job {job.id} is {job.status}; cancel it first, only finished jobs can be deleted")
    storage.delete_prefix(f"jobs/{job.id}/")
    for file_id in (job.model_file_id, job.data_file_id):
        if file_id is None:
            continue
        rec = files_repo.get_file_any(session, file_id)
        if rec is not None and rec.inline and not files_repo.referenced_elsewhere(session, file_id, job.id):
            storage.delete(rec.storage_key)
            files_repo.delete_file(session, rec)
    repository.delete_job(session, job)
    session.commit()
