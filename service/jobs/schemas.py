"""Request bodies of the jobs API (responses are the shared models of prunekit.spec.api)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class JobCreate(BaseModel):
    """JSON form of a submission (the multipart form carries the same fields)."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any]
    model_file_id: str
    data_file_id: str | None = None
    webhook_url: str | None = None
