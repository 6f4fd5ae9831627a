"""Read a spec from YAML or JSON text, with errors that name the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from prunekit.spec.job import JobSpec


class SpecError(ValueError):
    """A spec that cannot be used; `errors` lists {loc, msg} with dotted field paths."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


_METHODS = {"magnitude", "random", "channel", "nm", "structural"}


def _path(loc: tuple[int | str, ...]) -> str:
    # pydantic puts the discriminator's value in the path (pruning.magnitude.sparsity); users wrote pruning.sparsity.
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "pruning" and parts[1] in _METHODS:
        del parts[1]
    return ".".join(str(p) for p in parts)


def _format_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": _path(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in exc.errors(include_url=False)]


def parse_spec(data: Any) -> JobSpec:
    """Validate already-parsed data (a dict) into a JobSpec."""
    if not isinstance(data, dict):
        raise SpecError("the spec must be a mapping (YAML or JSON object)")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        errors = _format_errors(exc)
        summary = "; ".join(f"{e['loc'] or '<root>'}: {e['msg']}" for e in errors)
        raise SpecError(f"invalid spec: {summary}", errors) from None


def parse_spec_text(text: str) -> JobSpec:
    """Parse YAML (a superset of JSON) text into a JobSpec."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise SpecError(f"the spec is not valid YAML/JSON: {exc}") from None
    return parse_spec(data if data is not None else {})


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a spec file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec {p}: {exc}") from None
    return parse_spec_text(text)
