"""Response bodies of the files API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from jobstore.models import FileRecord

FileKind = Literal["model", "data"]


class FileOut(BaseModel):
    id: str
    sha256: str
    size: int
    name: str
    kind: str
    created_at: datetime

    @classmethod
    def of(cls, rec: FileRecord) -> FileOut:
        return cls(id=rec.id, sha256=rec.sha256, size=rec.size, name=rec.name, kind=rec.kind, created_at=rec.created_at)
