"""Client-only shapes. Job, event, file and problem bodies are the pydantic models of prunekit/spec/api.py."""

from __future__ import annotations

# Re-exported for code that imported FileInfo from here when it was a TypedDict; it is now the API's own model.
from prunekit.spec.api import FileInfo as FileInfo
from prunekit.spec.api import FileList as FileList
