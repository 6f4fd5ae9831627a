"""Client-only shapes. Job, event and problem bodies are the pydantic models of prunekit/spec/api.py."""

from __future__ import annotations

from typing import TypedDict


class FileInfo(TypedDict):
    """The body of POST/GET /v1/files (the server's service/files/schemas.py FileOut); a plain dict at runtime."""

    id: str
    sha256: str
    size: int
    name: str
    kind: str
    created_at: str
