"""Send one signed webhook (Standard Webhooks headers) to an allowlisted, pre-resolved address."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import httpx

from jobstore.db import utcnow
from jobstore.models import JobRecord, WebhookDeliveryRecord
from jobstore.settings import Settings
from jobstore.views import job_view
from jobstore.webhooks.events import message_id, payload_type
from jobstore.webhooks.policy import WebhookRefused, resolve_target
from jobstore.webhooks.secrets import NO_SECRET
from jobstore.webhooks.signing import sign


@dataclass
class DeliveryResult:
    ok: bool
    retryable: bool
    detail: str
    status_code: int | None = None  # the receiver's answer; None when there was none
    duration_ms: float = 0.0


def payload(job: JobRecord) -> bytes:
    body = {
        "type": payload_type(job),
        "timestamp": utcnow().isoformat(),
        "data": job_view(job).model_dump(mode="json"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def log_entry(job: JobRecord, attempt: int, result: DeliveryResult, at: datetime) -> WebhookDeliveryRecord:
    """The delivery log's row for one attempt."""
    return WebhookDeliveryRecord(
        job_id=job.id,
        attempt=attempt,
        created_at=at,
        event_type=payload_type(job),
        message_id=message_id(job),
        ok=result.ok,
        status_code=result.status_code,
        error=None if result.ok else result.detail[:2000],
        duration_ms=round(result.duration_ms, 1),
    )


def deliver(settings: Settings, job: JobRecord, secrets: Sequence[str]) -> DeliveryResult:
    """POST the job's terminal state to its webhook URL once, signed with each of the key's `secrets`."""
    if job.webhook_url is None:
        return DeliveryResult(False, False, "the job has no webhook URL")
    if settings.webhook_secret is None:
        return DeliveryResult(False, False, "webhooks are disabled on this server (no PRUNEKIT_WEBHOOK_SECRET)")
    if not secrets:
        return DeliveryResult(False, False, NO_SECRET)
    try:
        host, ip = resolve_target(job.webhook_url, settings)
    except WebhookRefused as exc:
        return DeliveryResult(False, False, f"refused: {exc}")
    parts = urlsplit(job.webhook_url)
    # Connect to the address we checked, not to a second DNS answer (DNS rebinding).
    ip_host = f"[{ip}]" if ":" in ip else ip
    netloc = ip_host + (f":{parts.port}" if parts.port else "")
    url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    body = payload(job)
    msg_id = message_id(job)
    ts = int(time.time())
    headers = {
        "content-type": "application/json",
        "host": parts.netloc.rsplit("@", 1)[-1],
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(sign(secret, msg_id, ts, body) for secret in secrets),
        "user-agent": "prunekit-webhooks/1",
    }
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    started = time.monotonic()
    try:
        with httpx.Client(timeout=settings.webhook_timeout, follow_redirects=False) as client:
            resp = client.post(url, content=body, headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return DeliveryResult(False, True, f"{type(exc).__name__}: {exc}", None, _ms_since(started))
    code, took = resp.status_code, _ms_since(started)
    return DeliveryResult(200 <= code < 300, not 200 <= code < 300, f"HTTP {code}", code, took)


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000
