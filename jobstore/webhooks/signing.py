"""Standard Webhooks signatures (https://www.standardwebhooks.com/): v1 = HMAC-SHA256."""

from __future__ import annotations

import base64
import hashlib
import hmac


def secret_bytes(secret: str) -> bytes:
    """The key from a 'whsec_<base64>' secret (a plain string is used as is)."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :])
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header value for this message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(
    secret: str, msg_id: str, timestamp: int, body: bytes, header: str, now: int | None = None, tolerance: int = 300
) -> bool:
    """Check a webhook-signature header (space-separated signatures) and that the timestamp is within tolerance."""
    if now is not None and abs(now - timestamp) > tolerance:
        return False  # a replayed or badly delayed message
    expected = sign(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in header.split())
