"""Request bodies of the jobs API (responses are the shared models of prunekit.spec.api)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from prunekit.spec.api import WebhookEventType

METADATA_MAX_PAIRS = 16
METADATA_KEY_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
METADATA_VALUE_MAX = 256

MetadataKey = Annotated[str, StringConstraints(pattern=METADATA_KEY_PATTERN)]
MetadataValue = Annotated[str, StringConstraints(max_length=METADATA_VALUE_MAX)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(
        max_length=METADATA_MAX_PAIRS,
        description=f"Up to {METADATA_MAX_PAIRS} string pairs (git SHA, branch, PR); keys are letters, digits, "
        f"'_', '.' or '-' (at most 64), values at most {METADATA_VALUE_MAX} characters.",
    ),
]
# The multipart form carries metadata as JSON text; this checks it exactly as JobCreate does.
METADATA_ADAPTER: TypeAdapter[dict[str, str]] = TypeAdapter(Metadata)


class JobCreate(BaseModel):
    """JSON form of a submission (the multipart form carries the same fields)."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any]
    model_file_id: str
    data_file_id: str | None = None
    webhook_url: str | None = None
    webhook_events: list[WebhookEventType] | None = Field(
        default=None,
        min_length=1,
        description="Which ends of the job its webhook is sent for (default: all of them); needs webhook_url.",
    )
    metadata: Metadata = Field(default_factory=dict)


def parse_metadata_text(text: str) -> dict[str, str]:
    """The multipart `metadata` field (a JSON object) checked like JobCreate.metadata; raises ValidationError."""
    return METADATA_ADAPTER.validate_json(text)


def parse_meta_filter(raw: str) -> tuple[str, str]:
    """One `meta=key:value` list filter as (key, value); ValueError says what is wrong with it."""
    key, sep, value = raw.partition(":")
    if not sep or not re.fullmatch(METADATA_KEY_PATTERN, key):
        raise ValueError(f"'{raw[:80]}' is not key:value with a metadata key (letters, digits, '_', '.', '-')")
    if len(value) > METADATA_VALUE_MAX:
        raise ValueError(f"the value for '{key}' is longer than {METADATA_VALUE_MAX} characters")
    return key, value


_WEBHOOK_EVENTS_ADAPTER: TypeAdapter[list[WebhookEventType]] = TypeAdapter(
    Annotated[list[WebhookEventType], Field(min_length=1)]
)


def parse_webhook_events_text(text: str) -> list[WebhookEventType]:
    """The multipart `webhook_events` field: types separated by commas; raises ValidationError."""
    return _WEBHOOK_EVENTS_ADAPTER.validate_python([t.strip() for t in text.split(",") if t.strip()])
