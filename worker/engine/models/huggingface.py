"""Hugging Face checkpoints: an archived `save_pretrained` folder in, the same kind of archive out.

Models are built only from classes transformers itself ships (`AutoModelFor<Task>`), never with
`trust_remote_code`; weights come from safetensors, or from `pytorch_model.bin` read with `weights_only=True`
and converted to safetensors first, so transformers never unpickles anything from the upload.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worker.engine.errors import InvalidModelError, UnsafeModelError, UnsupportedError
from worker.engine.models.archives import ArchiveKind, extract_archive, pack_folder

__all__ = [
    "HF_TASKS", "HuggingFaceSource", "default_input_specs", "load_huggingface", "resolve_task", "save_huggingface",
]  # fmt: skip

log = logging.getLogger(__name__)

# task -> (transformers Auto class, its model-type -> class-name mapping)
HF_TASKS: dict[str, tuple[str, str]] = {
    "causal_lm": ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    "sequence_classification": (
        "AutoModelForSequenceClassification",
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    ),
    "image_classification": ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    "feature_extraction": ("AutoModel", "MODEL_MAPPING_NAMES"),
}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_CONFIG_MAX_BYTES = 4 * 1024 * 1024


class _ExtractedFolder:
    """An extracted checkpoint folder, removed when the last model handle using it is gone."""

    def __init__(self, root: Path, holder: Path) -> None:
        self.root = root
        self._finalizer = weakref.finalize(self, shutil.rmtree, holder, True)


@dataclass(frozen=True)
class HuggingFaceSource:
    """Where a Hugging Face model came from: its extracted folder, task and archive kind (kept for saving)."""

    folder: _ExtractedFolder
    task: str
    archive: ArchiveKind

    @property
    def root(self) -> Path:
        return self.folder.root


def _read_config(root: Path) -> dict[str, Any]:
    path = root / "config.json"
    if not path.is_file():
        raise InvalidModelError(
            "the archive has no config.json at its top (or in its single top folder): archive the folder that "
            "model.save_pretrained() wrote"
        )
    if path.stat().st_size > _CONFIG_MAX_BYTES:
        raise InvalidModelError("config.json is larger than 4 MiB; this is not a model config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelError(f"config.json is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidModelError("config.json must hold a JSON object")
    return config


def _check_config(config: dict[str, Any]) -> str:
    from transformers import CONFIG_MAPPING

    if "auto_map" in config:
        raise UnsafeModelError(
            "refused: config.json names custom model code (auto_map); prunekit builds only the model classes "
            "transformers ships and never runs code from an upload"
        )
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise InvalidModelError(
            f"config.json has model_type {model_type!r}, which transformers does not know; give a checkpoint of "
            "a model type transformers ships"
        )
    return model_type


def _mapping(task: str) -> dict[str, Any]:
    from transformers.models.auto import modeling_auto

    return dict(getattr(modeling_auto, HF_TASKS[task][1]))


def resolve_task(config: dict[str, Any], requested: str) -> str:
    """The task: as requested, or from config.architectures (the class save_pretrained was called on)."""
    if requested != "auto":
        if requested not in HF_TASKS:
            raise InvalidModelError(f"model.task '{requested}' is not a Hugging Face task ({', '.join(HF_TASKS)})")
        return requested
    architectures = config.get("architectures") or []
    for task in ("causal_lm", "sequence_classification", "image_classification"):
        names = {n for v in _mapping(task).values() for n in ([v] if isinstance(v, str) else v)}
        if any(a in names for a in architectures):
            return task
    if architectures and all(str(a).endswith("Model") for a in architectures):
        return "feature_extraction"
    raise InvalidModelError(
        f"cannot tell the task from config.architectures {architectures}: set model.task to one of "
        f"{', '.join(HF_TASKS)}"
    )


def _convert_bin(root: Path) -> None:
    """pytorch_model.bin read with weights_only=True and rewritten as model.safetensors (the .bin removed)."""
    from safetensors.torch import save_file

    from worker.engine.models.loading import load_state_dict_file

    state = load_state_dict_file(root / "pytorch_model.bin")  # weights_only=True; code in the pickle is refused
    plain = {k: v.detach().clone().contiguous() for k, v in state.items()}
    save_file(plain, str(root / "model.safetensors"), metadata={"format": "pt"})
    (root / "pytorch_model.bin").unlink()


def _check_weights(root: Path) -> None:
    if (root / "model.safetensors").is_file() or (root / "model.safetensors.index.json").is_file():
        return
    if (root / "pytorch_model.bin").is_file():
        _convert_bin(root)
        return
    shards = sorted(p.name for p in root.glob("pytorch_model-*.bin"))
    if shards:
        raise UnsupportedError(
            "sharded pytorch_model-*.bin checkpoints are not read; save with safe_serialization=True (safetensors)"
        )
    raise InvalidModelError(f"the checkpoint has no weights: expected one of {', '.join(_WEIGHT_FILES)}")


def _build(root: Path, task: str) -> torch.nn.Module:
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    auto_class = getattr(transformers, HF_TASKS[task][0])
    try:
        config = transformers.AutoConfig.from_pretrained(str(root), trust_remote_code=False, local_files_only=True)
        config.use_cache = False  # key/value caches are for generation; evaluation and training run whole blocks
        model = auto_class.from_pretrained(
            str(root), config=config, trust_remote_code=False, local_files_only=True, use_safetensors=True, dtype="auto"
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InvalidModelError(f"transformers could not build the {task} model from the checkpoint: {first}") from None
    model.eval()
    return model


def load_huggingface(path: Path, kind: ArchiveKind, requested_task: str) -> tuple[torch.nn.Module, HuggingFaceSource]:
    """Extract the archive into a private temp folder and build its model; refuses unsafe or unknown content."""
    holder = Path(tempfile.mkdtemp(prefix="prunekit-hf-"))
    try:
        root = extract_archive(path, holder / "input")
        config = _read_config(root)
        _check_config(config)
        task = resolve_task(config, requested_task)
        _check_weights(root)
        module = _build(root, task)
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise
    return module, HuggingFaceSource(_ExtractedFolder(root, holder), task, kind)


def _carry_over(source: Path, target: Path) -> None:
    """Tokenizer, processor and generation files of the input, next to the new config and weights."""
    for item in source.rglob("*"):
        rel = item.relative_to(source)
        if not item.is_file() or rel.name in ("config.json", *_WEIGHT_FILES) or rel.name.endswith(".safetensors"):
            continue
        if (target / rel).exists():
            continue
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item, target / rel)


def save_huggingface(module: torch.nn.Module, source: HuggingFaceSource, target: Path) -> None:
    """save_pretrained (safetensors) plus the input's tokenizer and processor files, archived like the input."""
    with tempfile.TemporaryDirectory(prefix="prunekit-hf-out-") as tmp:
        folder = Path(tmp) / "model"
        module.save_pretrained(str(folder), safe_serialization=True)  # type: ignore[operator]
        _carry_over(source.root, folder)
        pack_folder(folder, target, source.archive)


def default_input_specs(module: torch.nn.Module, task: str, seq_len: int) -> list[dict[str, Any]]:
    """Inputs for a model without data or model.inputs: token ids for text models, pixels for vision models."""
    config = getattr(module, "config", None)
    if config is None:
        return []
    if task == "image_classification" or (hasattr(config, "image_size") and not hasattr(config, "vocab_size")):
        size = int(getattr(config, "image_size", 224))
        channels = int(getattr(config, "num_channels", 3))
        return [{"name": "pixel_values", "shape": [channels, size, size], "dtype": "float32"}]
    vocab = int(getattr(config, "vocab_size", 2))
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    length = min(seq_len, int(limit)) if limit else seq_len
    return [{"name": "input_ids", "shape": [length], "dtype": "int64", "high": vocab}]
