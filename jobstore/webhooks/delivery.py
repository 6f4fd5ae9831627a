"""Send one signed webhook (Standard Webhooks headers) to an allowlisted, pre-resolved address."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from jobstore.db import utcnow
from jobstore.models import JobRecord
from jobstore.settings import Settings
from jobstore.views import job_view
from jobstore.webhooks.policy import WebhookRefused, resolve_target
from jobstore.webhooks.secrets import NO_SECRET
from jobstore.webhooks.signing import sign


@dataclass
class DeliveryResult:
    ok: bool
    retryable: bool
    detail: str


def payload(job: JobRecord) -> bytes:
    body = {
        "type": f"job.{job.status}",
        "timestamp": utcnow().isoformat(),
        "data": job_view(job).model_dump(mode="json"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def deliver(settings: Settings, job: JobRecord, secrets: Sequence[str]) -> DeliveryResult:
    """POST the job's terminal state to its webhook URL once, signed with each of the key's `secrets`."""
    assert job.webhook_url is not None
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
    msg_id = f"msg_{job.id}_{job.status}"
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
    try:
        with httpx.Client(timeout=settings.webhook_timeout, follow_redirects=False) as client:
            resp = client.post(url, content=body, headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return DeliveryResult(False, True, f"{type(exc).__name__}: {exc}")
    if 200 <= resp.status_code < 300:
        return DeliveryResult(True, False, f"HTTP {resp.status_code}")
    return DeliveryResult(False, True, f"HTTP {resp.status_code}")
