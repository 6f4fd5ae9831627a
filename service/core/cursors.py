"""Opaque cursors of the list endpoints: the primary key of a page's last row, below which the next page starts."""

from __future__ import annotations

import base64
import binascii

from jobstore.models import PK_MAX
from service.core.errors import ValidationProblem


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(f"pk:{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The primary key in a cursor; 422 for anything encode_cursor cannot have made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        pk = int(value)
        # Only keys a row can have: beyond 64 bits the database cannot even compare them.
        if prefix != "pk" or not 1 <= pk <= PK_MAX:
            raise ValueError(raw)
        return pk
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationProblem("invalid cursor", [{"loc": "cursor", "msg": "invalid cursor"}]) from None
