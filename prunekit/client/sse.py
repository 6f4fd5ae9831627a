"""A minimal Server-Sent Events reader (the parts of the WHATWG format the prunekit server sends)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    event: str
    data: str
    id: str | None


def frames(lines: Iterable[str]) -> Iterator[Frame]:
    """Dispatch a frame at each blank line; comments (':' lines, keep-alives) and `retry:` are skipped."""
    event, last_id = "", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Frame(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
