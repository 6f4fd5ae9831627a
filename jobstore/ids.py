"""Server-made identifiers (storage keys are built from these, never from user input)."""

from __future__ import annotations

import re
import secrets

_ID_RE = re.compile(r"^(fil|job)_[0-9a-f]{24}$")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def is_id(value: str, prefix: str) -> bool:
    return bool(_ID_RE.match(value)) and value.startswith(prefix + "_")
