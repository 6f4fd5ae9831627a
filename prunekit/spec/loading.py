"""Read a spec from YAML or JSON text, with errors that name the field path."""

from __future__ import annotations

from collections.abc import Iterable
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


_METHODS = {"magnitude", "random", "channel", "nm", "wanda", "sparsegpt", "structural"}

# No real spec nests more than a handful of levels; hostile input nested thousands deep would otherwise
# exhaust the interpreter's recursion (in the YAML composer, pydantic or JSON encoding) instead of failing cleanly.
MAX_NESTING = 64
# Values in one spec, counted as they would be serialized: bounds YAML aliases that expand exponentially.
MAX_VALUES = 100_000


def check_nesting(data: Any, max_depth: int = MAX_NESTING, max_values: int = MAX_VALUES) -> None:
    """Raise SpecError when mappings/lists in `data` nest deeper than `max_depth` or hold over `max_values` values.

    Iterative, so it is safe on input that recursion would not survive (cycles from YAML aliases included:
    they exceed the depth). The error's loc is the top-level key under which the limit was exceeded.
    """
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    count = 1
    while stack:
        node, depth, top = stack.pop()
        items: Iterable[tuple[Any, Any]]
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, list | tuple):
            items = enumerate(node)
        else:
            continue
        if depth >= max_depth:
            msg = f"nested deeper than {max_depth} levels"
            raise SpecError(f"the spec is {msg}", [{"loc": top, "msg": msg}])
        count += len(node)
        if count > max_values:
            msg = f"more than {max_values} values"
            raise SpecError(f"the spec holds {msg}", [{"loc": top, "msg": msg}])
        stack.extend((value, depth + 1, top or str(key)) for key, value in items)


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
    check_nesting(data)
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
    except RecursionError:
        # The composer recurses once per level, so this comes before check_nesting can look.
        raise SpecError(f"the spec is nested deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:  # a scalar the constructor cannot convert, e.g. an integer of over 4300 digits
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
