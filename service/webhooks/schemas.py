"""Response bodies of the webhook-secret API."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from jobstore.models import WebhookSecretRecord
from jobstore.settings import Settings


class WebhookSecretInfo(BaseModel):
    """What the server says about a key's webhook secret without showing it."""

    generation: int | None = Field(description="Null until the key's first rotation (then webhooks are refused).")
    rotated_at: datetime | None
    previous_valid_until: datetime | None = Field(
        description="Until when deliveries also carry a signature with the previous secret."
    )

    @classmethod
    def of(cls, row: WebhookSecretRecord | None, settings: Settings) -> WebhookSecretInfo:
        if row is None:
            return cls(generation=None, rotated_at=None, previous_valid_until=None)
        grace = timedelta(seconds=settings.webhook_rotation_grace)
        previous = row.rotated_at + grace if row.generation > 1 else None
        return cls(generation=row.generation, rotated_at=row.rotated_at, previous_valid_until=previous)


class WebhookSecretCreated(WebhookSecretInfo):
    secret: str = Field(description="'whsec_<base64>': shown only in this response; verify webhooks with it.")
