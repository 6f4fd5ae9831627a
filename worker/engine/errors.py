"""The engine's few explicit error types. Each carries a stable `code` that the API and CLI map."""

from __future__ import annotations


class EngineError(Exception):
    """Base of errors a user can act on; `code` is stable and machine-readable."""

    code = "engine_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidModelError(EngineError):
    """The model file is corrupt, truncated, of an unknown format, or does not match its architecture."""

    code = "invalid_model"


class UnsafeModelError(EngineError):
    """The model file would execute code when loaded; it was refused and nothing ran."""

    code = "unsafe_model"


class InvalidDataError(EngineError):
    """The dataset is unreadable or has wrong keys, shapes, dtypes or label ranges."""

    code = "invalid_data"


class InvalidSpecError(EngineError):
    """The spec is valid on its own but does not fit this model (e.g. an override that matches nothing)."""

    code = "invalid_spec"


class UnsupportedError(EngineError):
    """The request is well-formed but this model or format cannot do it (says which layer and why)."""

    code = "unsupported"


class ResourceLimitError(EngineError):
    """The job exceeded a memory, CPU-time or file-size limit of its sandbox."""

    code = "resource_limit"


class JobCanceledError(EngineError):
    """The job was canceled while running."""

    code = "canceled"


ERRORS_BY_CODE: dict[str, type[EngineError]] = {
    cls.code: cls
    for cls in (
        EngineError,
        InvalidModelError,
        UnsafeModelError,
        InvalidDataError,
        InvalidSpecError,
        UnsupportedError,
        ResourceLimitError,
        JobCanceledError,
    )
}


def error_from_dict(data: dict[str, str]) -> EngineError:
    """Rebuild an error sent across a process boundary."""
    cls = ERRORS_BY_CODE.get(data.get("code", ""), EngineError)
    return cls(data.get("message", "unknown engine error"))
