"""ONNX export of a result, checked against PyTorch's own outputs with onnxruntime."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.engine.errors import EngineError, UnsupportedError
from worker.engine.models.calling import as_inputs, caller, keyword_names
from worker.engine.models.outputs import output_tensors

DEFAULT_ATOL = 1e-4


@dataclass
class OnnxCheck:
    """Where the model went and how closely onnxruntime reproduces PyTorch on random inputs."""

    path: str
    exporter: str  # "dynamo" (torch.export-based) or "torchscript" (legacy fallback)
    dynamic_batch: bool  # the batch dimension is symbolic; checked at a second batch size too
    opset: int
    inputs_checked: int
    max_abs_diff: float
    max_abs_reference: float  # largest |output| PyTorch produced, to judge max_abs_diff against
    atol: float
    passed: bool
    export_seconds: float
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_onnx(
    module: nn.Module,
    example_input: torch.Tensor | Mapping[str, torch.Tensor],
    path: Path,
    atol: float = DEFAULT_ATOL,
    n_checks: int = 3,
    seed: int = 0,
) -> OnnxCheck:
    """Export `module` (eval mode) to `path`, then compare onnxruntime with PyTorch on random inputs.

    Raises UnsupportedError when onnx/onnxruntime are missing or no exporter can handle the model;
    a numeric mismatch is reported (`passed=False`), not raised.
    """
    ort = _require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    example = as_inputs(example_input)
    call = caller(module, list(example))
    try:
        started = time.perf_counter()
        exporter, dynamic = _export(module, example, path)
        export_seconds = time.perf_counter() - started
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        generator = torch.Generator().manual_seed(seed)
        batches = [example]
        for i in range(max(0, n_checks - 1)):
            rows = len(next(iter(example.values())))
            if dynamic and i % 2 == 0:
                rows += 2  # a batch size the exporter never saw
            batches.append({k: _random_like(v, [rows, *v.shape[1:]], generator) for k, v in example.items()})
        max_diff = 0.0
        max_ref = 0.0
        for batch in batches:
            with torch.no_grad():
                reference = [t.detach().cpu().numpy() for t in output_tensors(call(batch))]
            got = session.run(None, session_feed(session, batch))
            if len(got) != len(reference):
                raise UnsupportedError(f"the ONNX model returns {len(got)} outputs, PyTorch {len(reference)}")
            for ref, out in zip(reference, got, strict=True):
                if ref.shape != np.shape(out):
                    raise UnsupportedError(f"ONNX output shape {np.shape(out)} differs from PyTorch's {ref.shape}")
                if ref.size:
                    max_diff = max(max_diff, float(np.max(np.abs(ref.astype(np.float64) - out))))
                    max_ref = max(max_ref, float(np.max(np.abs(ref))))
    finally:
        module.train(was_training)
    return OnnxCheck(
        path=str(path),
        exporter=exporter,
        dynamic_batch=dynamic,
        opset=_opset(path),
        inputs_checked=len(batches),
        max_abs_diff=max_diff,
        max_abs_reference=max_ref,
        atol=atol,
        passed=bool(max_diff <= atol),
        export_seconds=export_seconds,
        size_bytes=path.stat().st_size,
    )


def _require_onnx() -> Any:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UnsupportedError(
            f"ONNX export needs the packages {', '.join(missing)}: pip install onnx onnxscript onnxruntime "
            "(or the 'engine' extra of prunekit)"
        )
    return importlib.import_module("onnxruntime")


def session_feed(session: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The batch by the ONNX graph's input names (ours where kept; by position where the exporter renamed)."""
    names = [i.name for i in session.get_inputs()]
    if set(names) <= set(batch):
        return {n: batch[n].detach().cpu().numpy() for n in names}
    return {n: t.detach().cpu().numpy() for n, t in zip(names, batch.values(), strict=False)}


def _export_call(
    module: nn.Module, example: Mapping[str, torch.Tensor], dynamic: bool
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor], Any]:
    """(args, kwargs, dynamic_shapes): keywords for models that name every input (Hugging Face), else positional."""
    keywords = keyword_names(module, list(example))
    args = tuple(v for k, v in example.items() if k not in keywords)
    kwargs = {k: v for k, v in example.items() if k in keywords}
    if not dynamic:
        return args, kwargs, None
    batch = torch.export.Dim("batch")
    return args, kwargs, {k: {0: batch} for k in kwargs} if kwargs else tuple({0: batch} for _ in args)


def _export(module: nn.Module, example: Mapping[str, torch.Tensor], path: Path) -> tuple[str, bool]:
    """Try the torch.export-based exporter (dynamic batch, then static), then the legacy TorchScript one."""
    errors: list[str] = []
    attempts: list[tuple[str, bool]] = [("dynamo", True), ("dynamo", False), ("torchscript", False)]
    if isinstance(module, torch.jit.ScriptModule):
        attempts = [("torchscript", False)]  # only the legacy exporter reads TorchScript
    names = list(example)
    for exporter, dynamic in attempts:
        args, kwargs, shapes = _export_call(module, example, dynamic)
        try:
            # The exporters print progress and deprecation notes; a job log wants neither.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                if exporter == "dynamo":
                    torch.onnx.export(
                        module, args, str(path), kwargs=kwargs, dynamo=True, verbose=False, input_names=names,
                        dynamic_shapes=shapes,
                    )  # fmt: skip
                else:
                    torch.onnx.export(module, args, str(path), kwargs=kwargs, dynamo=False, input_names=names)
            return exporter, dynamic
        except EngineError:
            raise
        except Exception as exc:
            errors.append(f"{exporter}{' (dynamic batch)' if dynamic else ''}: {type(exc).__name__}: {exc}"[:500])
    raise UnsupportedError("ONNX export failed with every exporter:\n" + "\n".join(errors))


def _random_like(example: torch.Tensor, shape: list[int], generator: torch.Generator) -> torch.Tensor:
    if example.is_floating_point():
        return torch.randn(shape, generator=generator, dtype=example.dtype)
    # Integer inputs (token ids, class indices) must stay within the range the model saw.
    low, high = int(example.min()), int(example.max()) + 1
    return torch.randint(low, high, shape, generator=generator, dtype=example.dtype)


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
