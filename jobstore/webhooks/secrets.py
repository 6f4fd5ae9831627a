"""Per-key webhook signing secrets, derived from the server's master secret, the key's name and a generation.

Nothing secret is stored: the database keeps only each key's generation, so a leaked database dump signs
nothing, and rotating a key is one counter increment. For `webhook_rotation_grace` seconds after a rotation
deliveries carry signatures with both the new and the previous secret (Standard Webhooks allows several).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta

from jobstore.models import WebhookSecretRecord
from jobstore.settings import Settings
from jobstore.webhooks.signing import secret_bytes

NO_SECRET = "the API key has no webhook secret yet; create one with POST /v1/webhook-secret (shown once)"


def derive(master: str, owner: str, generation: int) -> str:
    """The 'whsec_<base64>' secret of `owner` at `generation`."""
    msg = f"prunekit webhook secret\0{owner}\0{generation}".encode()
    key = hmac.new(secret_bytes(master), msg, hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(key).decode("ascii")


def current_secret(settings: Settings, row: WebhookSecretRecord) -> str:
    if settings.webhook_secret is None:
        raise LookupError("webhooks are disabled on this server (no PRUNEKIT_WEBHOOK_SECRET)")
    return derive(settings.webhook_secret.get_secret_value(), row.owner, row.generation)


def signing_secrets(settings: Settings, row: WebhookSecretRecord | None, now: datetime) -> list[str]:
    """The secrets a delivery is signed with: the current one, plus the previous one within the grace period."""
    if row is None or settings.webhook_secret is None:
        return []
    master = settings.webhook_secret.get_secret_value()
    secrets = [derive(master, row.owner, row.generation)]
    if row.generation > 1 and now - row.rotated_at < timedelta(seconds=settings.webhook_rotation_grace):
        secrets.append(derive(master, row.owner, row.generation - 1))
    return secrets
