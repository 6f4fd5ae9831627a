"""Writing the compressed model in a format plain PyTorch reads (no prunekit needed), atomically."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

import torch
from torch.export import ExportedProgram

from worker.engine.errors import EngineError, UnsupportedError
from worker.engine.models.calling import ModelInputs, as_inputs, keyword_names
from worker.engine.models.formats import ModelFormat
from worker.engine.models.handle import LoadedModel
from worker.engine.models.huggingface import save_huggingface
from worker.engine.models.sparse import FORMAT as SPARSE_FORMAT
from worker.engine.models.sparse import write_sparse

__all__ = ["ARCHIVE_SUFFIX", "OUTPUT_SUFFIX", "save_model"]

log = logging.getLogger(__name__)

OUTPUT_SUFFIX: dict[str, str] = {
    "torchscript": ".pt", "export": ".pt2", "state_dict": ".safetensors", SPARSE_FORMAT: ".sparse.safetensors",
}  # fmt: skip
# huggingface: the same kind of archive as the upload
ARCHIVE_SUFFIX: dict[str, str] = {"zip": ".zip", "tar": ".tar", "tar.gz": ".tar.gz"}


@contextlib.contextmanager
def _atomic_target(final: Path) -> Iterator[Path]:
    """A temp path next to `final`; renamed over it only when the block succeeds, so readers never see half a file."""
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _write_with(final: Path, writer: Callable[[IO[bytes]], object]) -> None:
    with _atomic_target(final) as tmp, open(tmp, "wb") as fh:
        writer(fh)
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    # Artifacts are for inference: script/trace/export in eval mode, then give the caller back its mode.
    was_training = module.training
    if enabled:
        module.eval()
    try:
        yield
    finally:
        if enabled:
            module.train(was_training)


def _note(notes: list[str] | None, text: str) -> None:
    log.info(text)
    if notes is not None:
        notes.append(text)


def _shapes(example: Mapping[str, torch.Tensor]) -> str:
    """'the input shape [1, 8, 8]', or 'the input shapes input_ids [1, 16], attention_mask [1, 16]'."""
    if len(example) == 1:
        return f"the input shape {list(next(iter(example.values())).shape)}"
    return "the input shapes " + ", ".join(f"{k} {list(v.shape)}" for k, v in example.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# --- torchscript -----------------------------------------------------------------------------------------------


def _trace(module: torch.nn.Module, example: ModelInputs) -> torch.jit.ScriptModule:
    """torch.jit.trace on named inputs, by keyword where the forward takes them; dict outputs allowed (strict=False)."""
    keywords = keyword_names(module, list(example))
    with torch.no_grad():
        if keywords:
            return torch.jit.trace(module, example_kwarg_inputs=dict(example), check_trace=False, strict=False)
        return torch.jit.trace(module, tuple(example.values()), check_trace=False, strict=False)


def _to_script(model: LoadedModel, example_input: ModelInputs | None, notes: list[str] | None) -> torch.nn.Module:
    module = model.module
    if isinstance(module, torch.jit.ScriptModule):
        return module
    script_error: BaseException | None = None
    if model.exported_program is None:  # GraphModules from torch.export do not script; go straight to tracing
        try:
            scripted = torch.jit.script(module)
            _note(notes, "TorchScript output was made with torch.jit.script (keeps control flow)")
            return scripted
        except Exception as exc:  # scripting fails with many exception types on unsupported Python
            script_error = exc
    if example_input is None:
        reason = f"torch.jit.script failed ({_first_line(script_error)}); " if script_error else ""
        raise UnsupportedError(
            f"cannot write TorchScript: {reason}tracing needs an example input (set model.input_shape or give data)"
        )
    try:
        traced = _trace(module, example_input)
    except Exception as exc:
        raise UnsupportedError(f"cannot write TorchScript: tracing failed: {_first_line(exc)}") from exc
    why = f" because torch.jit.script failed ({_first_line(script_error)})" if script_error else ""
    _note(
        notes,
        f"TorchScript output was made with torch.jit.trace{why}: data-dependent control flow is frozen "
        f"to the example input's path and {_shapes(example_input)}",
    )
    return traced


# --- torch.export ------------------------------------------------------------------------------------------------


def _program_with_weights(model: LoadedModel) -> ExportedProgram | None:
    """The input program with the module's current weights, or None if the module's tensors no longer fit its graph."""
    program = model.exported_program
    assert program is not None
    current: dict[str, torch.Tensor] = dict(model.module.named_parameters())
    current.update(model.module.named_buffers())
    for name, value in program.state_dict.items():
        if name not in current or tuple(current[name].shape) != tuple(value.shape):
            return None
    # deepcopy: the original program may share storage with the module (ep.module() does) or a clone of it
    updated = copy.deepcopy(program)
    with torch.no_grad():
        for name, value in updated.state_dict.items():
            value.copy_(current[name].detach().to(value.device, value.dtype))
    return updated


def _export_args(
    module: torch.nn.Module, example: ModelInputs
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor], Any]:
    """(args, kwargs, dynamic_shapes) for torch.export: a batch of 2 (1 would be specialized), the batch dynamic."""
    example = {k: v.detach().expand(2, *v.shape[1:]).contiguous() if len(v) == 1 else v for k, v in example.items()}
    keywords = keyword_names(module, list(example))
    args = tuple(v for k, v in example.items() if k not in keywords)
    kwargs = {k: v for k, v in example.items() if k in keywords}
    batch = torch.export.Dim("batch", min=1)
    dynamic = {k: {0: batch} for k in example} if not args else tuple({0: batch} for _ in args) if not kwargs else None
    return args, kwargs, dynamic


def _export_eager(
    module: torch.nn.Module, example_input: ModelInputs | None, notes: list[str] | None
) -> ExportedProgram:
    if example_input is None:
        raise UnsupportedError(
            "cannot write a torch.export program: export needs an example input (set model.input_shape or give data)"
        )
    args, kwargs, dynamic = _export_args(module, example_input)
    try:
        with _eval_mode(module), torch.no_grad():
            try:
                if dynamic is None:
                    raise ValueError("positional and keyword inputs together: exported with static shapes")
                program = torch.export.export(module, args, kwargs, dynamic_shapes=dynamic)
                _note(notes, "torch.export output has a dynamic batch dimension")
            except Exception as exc:
                log.info("export with a dynamic batch dimension failed (%s); exporting with static shapes", exc)
                program = torch.export.export(module, args, kwargs)
                shapes = _shapes({**dict(zip(example_input, args, strict=False)), **kwargs})
                _note(notes, f"torch.export output is specialized to {shapes}")
    except Exception as exc:
        raise UnsupportedError(f"cannot write a torch.export program: {_first_line(exc)}") from exc
    return program


def _to_program(model: LoadedModel, example_input: ModelInputs | None, notes: list[str] | None) -> ExportedProgram:
    if isinstance(model.module, torch.jit.ScriptModule):
        raise UnsupportedError("cannot write a torch.export program from a TorchScript model; choose torchscript")
    if model.exported_program is not None:
        program = _program_with_weights(model)
        if program is not None:
            return program
        _note(notes, "parameter shapes changed since loading; the program was exported again from the module")
        if example_input is None and model.exported_program.example_inputs:
            args, kwargs = model.exported_program.example_inputs
            example_input = {**{f"input_{i}": a for i, a in enumerate(args)}, **(kwargs or {})}
    return _export_eager(model.module, example_input, notes)


def _verify_program(path: Path, module: torch.nn.Module) -> None:
    # Our own file, so torch.export.load is fine here; this catches weights that did not make it into the program.
    with open(path, "rb") as fh:
        reloaded = torch.export.load(fh)
    current = dict(module.named_parameters())
    for name, value in reloaded.state_dict.items():
        if name in current and not torch.equal(value.detach().cpu(), current[name].detach().cpu()):
            raise EngineError(f"internal error: the saved program's '{name}' differs from the model's weights")


# --- state_dict --------------------------------------------------------------------------------------------------


def _plain_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses non-contiguous tensors and tensors sharing storage (tied weights): copy those.
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        seen.add(key)
        out[name] = tensor
    return out


def _save_state_dict(model: LoadedModel, out_dir: Path, stem: str, notes: list[str] | None) -> Path:
    from safetensors.torch import save_file

    final = out_dir / f"{stem}.safetensors"
    tensors = _plain_state(model.module)
    meta: dict[str, Any] = {
        "format": "state_dict",
        "weights": final.name,
        "architecture": model.architecture,
        "kwargs": model.arch_kwargs,
        "torch": torch.__version__.split("+")[0],
        "load": "model.load_state_dict(safetensors.torch.load_file(weights))",
    }
    if model.architecture is None:
        _note(notes, "state_dict output has no architecture name (the input was not a state_dict)")
    with _atomic_target(final) as tmp:
        save_file(tensors, str(tmp), metadata={"architecture": model.architecture or ""})
    meta_bytes = json.dumps(meta, indent=2).encode()
    _write_with(out_dir / f"{stem}.json", lambda fh: fh.write(meta_bytes))
    return final


def _save_sparse(model: LoadedModel, out_dir: Path, stem: str) -> Path:
    """Only the surviving weights (bitmask + values); self-describing for state-dict inputs, else for the upload."""
    final = out_dir / f"{stem}{OUTPUT_SUFFIX[SPARSE_FORMAT]}"
    meta = {
        "architecture": model.architecture or "",
        "kwargs": json.dumps(model.arch_kwargs),
        "source_format": model.format,
        "torch": torch.__version__.split("+")[0],
    }
    with _atomic_target(final) as tmp:
        write_sparse(model.module.state_dict(), tmp, meta)  # tied tensors are stored once (its aliases)
    return final


# --- huggingface -------------------------------------------------------------------------------------------------


def _save_huggingface(model: LoadedModel, out_dir: Path, stem: str) -> Path:
    source = model.hf_source
    if source is None:
        raise UnsupportedError("output.format 'huggingface' needs a Hugging Face checkpoint as input; use 'same'")
    final = out_dir / f"{stem}{ARCHIVE_SUFFIX[source.archive]}"
    with _atomic_target(final) as tmp:
        save_huggingface(model.module, source, tmp)
    return final


# --- entry point -------------------------------------------------------------------------------------------------


def save_model(
    model: LoadedModel,
    out_dir: str | os.PathLike[str],
    fmt: ModelFormat | Literal["sparse_state_dict"],
    example_input: torch.Tensor | Mapping[str, torch.Tensor] | None,
    stem: str = "model",
    notes: list[str] | None = None,
) -> Path:
    """Write `model` as `<stem>.pt` / `.pt2` / `.safetensors(+.json)` / `.sparse.safetensors`; notes get how.

    `example_input`: one sample of the model's input, or of its named inputs (for tracing and export).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    example = {k: v.detach().cpu() for k, v in as_inputs(example_input).items()} if example_input is not None else None
    if fmt == "state_dict":
        return _save_state_dict(model, out_dir, stem, notes)
    if fmt == "huggingface":
        return _save_huggingface(model, out_dir, stem)
    if fmt == SPARSE_FORMAT:
        return _save_sparse(model, out_dir, stem)
    final = out_dir / f"{stem}{OUTPUT_SUFFIX[fmt]}"
    if fmt == "torchscript":
        with _eval_mode(model.module, model.supports_train_mode):
            scripted = _to_script(model, example, notes)
            _write_with(final, lambda fh: torch.jit.save(scripted, fh))
        return final
    if fmt == "export":
        program = _to_program(model, example, notes)
        _write_with(final, lambda fh: torch.export.save(program, fh))
        _verify_program(final, model.module)
        return final
    raise UnsupportedError(f"unknown output format '{fmt}'")
