"""Safe model loading: nothing in an uploaded file gets to run Python code.

- state-dicts: safetensors, or torch.save files read ONLY with `torch.load(weights_only=True)` (never retried
  without it; a refused global means the file would run code, so it is refused).
- TorchScript: `torch.jit.load` (its code runs in the TorchScript interpreter, not Python) after
  `torchscript.check_torchscript_archive` refused code that reads or writes files.
- torch.export `.pt2`: checked and read by `pt2.load_exported_program`, which closes torch's unsafe paths.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from prunekit.spec.job import ModelSpec
from worker.engine.errors import InvalidModelError, UnsafeModelError
from worker.engine.models.architectures import build_architecture
from worker.engine.models.archives import archive_kind
from worker.engine.models.formats import DetectedFormat, detect_format
from worker.engine.models.handle import LoadedModel
from worker.engine.models.huggingface import load_huggingface
from worker.engine.models.pt2 import load_exported_program
from worker.engine.models.sparse import read_sparse
from worker.engine.models.torchscript import load_torchscript

__all__ = ["check_finite", "load_model", "load_state_dict_file", "load_weights_into"]

log = logging.getLogger(__name__)
_SHOW = 8  # how many names an error message lists before "... and N more"
_STATE_DICT_KEYS = ("state_dict", "model_state_dict")


def _names(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_SHOW])
    return shown + (f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], what: str = "the model") -> None:
    """Raise InvalidModelError naming every floating tensor that holds NaN or Inf."""
    bad: list[str] = []
    for name, tensor in tensors:
        if (tensor.is_floating_point() or tensor.is_complex()) and tensor.numel() > 0:
            finite = torch.isfinite(tensor.detach())
            if not bool(finite.all()):
                bad.append(f"{name} ({int((~finite).sum())} of {tensor.numel()})")
    if bad:
        raise InvalidModelError(f"{what} has NaN or Inf weights in: {_names(bad)}; fix the training run or the export")


def _refused_global(exc: BaseException) -> str | None:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return found.group(1) if found else None


def _torch_load_weights_only(path: Path) -> Any:
    try:
        # A file object, not the path: torch.load dispatches on the name (e.g. "*.safetensors"); we go by content.
        with open(path, "rb") as fh:
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        name = _refused_global(exc)
        if name is not None:
            raise UnsafeModelError(
                f"refused: unpickling would execute code (global {name}); nothing was run; "
                "save a state_dict or use safetensors"
            ) from exc
        raise InvalidModelError(f"could not read the torch.save file: {str(exc).splitlines()[0][:300]}") from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        # e.g. "PytorchStreamReader failed reading zip archive" for truncated or damaged files
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise InvalidModelError(f"could not read the torch.save file (truncated or corrupt?): {first}") from exc


def _as_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise InvalidModelError(
            f"the torch.save file holds a {type(obj).__name__}, not a state_dict; save model.state_dict() "
            "(a dict of tensor name -> tensor)"
        )
    not_tensors = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        hint = f" (or a dict with one of {', '.join(repr(k) for k in _STATE_DICT_KEYS)} holding one)"
        raise InvalidModelError(
            f"the state_dict has entries that are not tensors: {_names(not_tensors)}; save only "
            f"model.state_dict(){hint}"
        )
    if not obj:
        raise InvalidModelError("the state_dict is empty")
    return {str(k): v for k, v in obj.items()}


def load_state_dict_file(
    path: str | os.PathLike[str], detected: DetectedFormat | None = None
) -> dict[str, torch.Tensor]:
    """Read a state-dict (safetensors or torch.save) without running code; checks for non-tensors and NaN/Inf."""
    path = Path(path)
    detected = detected or detect_format(path)
    if detected.container == "sparse safetensors":
        state = read_sparse(path)  # prunekit's bitmask + values layout, restored dense (worker/engine/models/sparse.py)
    elif detected.container == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise InvalidModelError(f"could not read the safetensors file (truncated or corrupt?): {exc}") from exc
    elif detected.format == "state_dict":
        state = _as_state_dict(_torch_load_weights_only(path))
    else:
        raise InvalidModelError(f"the file is a {detected.container}, not a state_dict")
    check_finite(state.items(), "the state_dict")
    return state


def _strip_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    # nn.DataParallel / DistributedDataParallel checkpoints prefix every key with "module."
    if state and not (set(state) & expected) and all(k.startswith("module.") for k in state):
        log.info("stripping the 'module.' prefix of a DataParallel state_dict")
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_weights_into(module: torch.nn.Module, state: dict[str, torch.Tensor], architecture: str) -> None:
    """load_state_dict(strict=True), after checking keys and shapes ourselves so the error names them all."""
    expected = module.state_dict()
    state = _strip_prefix(state, set(expected))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {list(state[k].shape)}, {architecture} {list(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_names(mismatched)}")
    if problems:
        raise InvalidModelError(
            f"the state_dict does not fit architecture '{architecture}': {'; '.join(problems)}. "
            "Check model.architecture and model.kwargs (e.g. num_classes)"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # dtype casts that cannot happen, e.g. complex into float
        raise InvalidModelError(f"the state_dict does not fit architecture '{architecture}': {exc}") from exc


def load_model(path: str | os.PathLike[str], model_spec: ModelSpec) -> LoadedModel:
    """Load an uploaded model without running code from it; raises InvalidModelError / UnsafeModelError."""
    path = Path(path)
    detected = detect_format(path)
    if model_spec.format != "auto" and model_spec.format != detected.format:
        raise InvalidModelError(
            f"model.format is '{model_spec.format}' but the file is a {detected.container} "
            f"({detected.format}); set model.format to 'auto' or '{detected.format}'"
        )
    if detected.format == "huggingface":
        return _load_huggingface(path, detected, model_spec)
    if detected.format == "torchscript":
        scripted = load_torchscript(path)
        check_finite(_all_tensors(scripted), "the TorchScript model")
        return LoadedModel(
            module=scripted, format="torchscript", source_container=detected.container, task=model_spec.task
        )
    if detected.format == "export":
        program = load_exported_program(path)
        constants = [(k, v) for k, v in program.constants.items() if isinstance(v, torch.Tensor)]
        check_finite([*program.state_dict.items(), *constants], "the exported program")
        try:
            graph_module = program.module()
        except Exception as exc:
            raise InvalidModelError(f"could not build a module from the exported program: {exc}") from exc
        return LoadedModel(
            module=graph_module,
            format="export",
            exported_program=program,
            supports_train_mode=False,
            source_container=detected.container,
            fixed_batch_size=_static_batch_size(program),
            task=model_spec.task,
        )
    if not model_spec.architecture:
        raise InvalidModelError(
            f"the file is a state_dict ({detected.container}); set model.architecture so it can be built, "
            "e.g. 'torchvision/resnet18' or 'prunekit/digits_cnn'"
        )
    state = load_state_dict_file(path, detected)
    module = build_architecture(model_spec.architecture, model_spec.kwargs)
    load_weights_into(module, state, model_spec.architecture)
    module.eval()
    return LoadedModel(
        module=module,
        format="state_dict",
        architecture=model_spec.architecture,
        arch_kwargs=dict(model_spec.kwargs),
        source_container=detected.container,
        task=model_spec.task,
    )


def _load_huggingface(path: Path, detected: DetectedFormat, model_spec: ModelSpec) -> LoadedModel:
    kind = archive_kind(path)
    if kind is None:  # detect_format saw an archive's magic bytes, so this is a race with the file changing
        raise InvalidModelError("the Hugging Face archive could not be read")
    module, source = load_huggingface(path, kind, model_spec.task)
    check_finite(_all_tensors(module), "the Hugging Face model")
    return LoadedModel(
        module=module, format="huggingface", source_container=detected.container, hf_source=source, task=source.task
    )


def _static_batch_size(program: torch.export.ExportedProgram) -> int | None:
    """Dim 0 of the first tensor input when the program has it static (an int, not a symbol), else None."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                size = value.shape[0]
                return size if isinstance(size, int) else None
    return None


def _all_tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*module.named_parameters(), *module.named_buffers()]
