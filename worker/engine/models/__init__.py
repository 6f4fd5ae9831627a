"""Model formats, safe loading, saving and the architecture registry (see docs/design/engine-contracts.md)."""

from worker.engine.models.architectures import build_architecture, known_architectures
from worker.engine.models.formats import DetectedFormat, ModelFormat, detect_format
from worker.engine.models.handle import LoadedModel
from worker.engine.models.loading import load_model
from worker.engine.models.saving import save_model

__all__ = [
    "DetectedFormat",
    "LoadedModel",
    "ModelFormat",
    "build_architecture",
    "detect_format",
    "known_architectures",
    "load_model",
    "save_model",
]
