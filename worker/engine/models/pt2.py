"""Reading untrusted torch.export `.pt2` archives.

torch.export.load is documented as unsafe for untrusted files, and in torch 2.14 it is, in several places:
pickled weights/constants are read by torch's loader with `weights_only=False`, "opaque" constants with `pickle.loads`,
sample inputs fall back to `weights_only=False` when the safe load fails, `data/aotinductor/` loads a compiled
shared library, node targets are resolved by attribute walks from the `torch` module (so `torch.os.system` or
`torch.ops.load_library` would resolve), and symbolic-shape expressions go through `sympy.sympify`, which evals.

So before torch sees the archive we check it ourselves (`check_pt2_archive`), and while torch reads it we make
every `torch.load` in its reader use `weights_only=True` and every `pickle.loads` fail (`_hardened_reader`).
"""

from __future__ import annotations

import io
import json
import math
import operator
import re
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.export import ExportedProgram

from worker.engine.errors import InvalidModelError, UnsafeModelError
from worker.engine.models.formats import zip_entries

__all__ = ["check_pt2_archive", "load_exported_program"]

_REFUSED = "nothing was run; save the program with torch.export.save from a plain nn.Module, or upload a state_dict"

# Operator-module functions exported graphs use for symbolic-shape arithmetic and tuple indexing.
_SAFE_OPERATOR = frozenset(
    {
        "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs",
        "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift",
    }
)  # fmt: skip
_SAFE_HIGHER_ORDER = frozenset(
    {
        "cond", "while_loop", "map_impl", "scan", "associative_scan", "invoke_subgraph",
        "wrap_with_set_grad_enabled", "wrap_with_autocast", "auto_functionalized", "auto_functionalized_v2",
        "with_effects",
    }
)  # fmt: skip
# Operators that touch the filesystem or load code: a model has no business calling them.
_DENIED_OP_WORDS = ("from_file", "load_library", "save", "_load")

_OP_RE = re.compile(r"^torch\.ops\.(\w+)\.(\w+)\.(\w+)$")
_HOP_RE = re.compile(r"^torch\.ops\.higher_order\.(\w+)$")
_OPERATOR_RE = re.compile(r"^_operator\.(\w+)$")
_MATH_RE = re.compile(r"^math\.(\w+)$")
_SYM_RE = re.compile(r"^torch\.(_?sym_\w+)$")

# Symbolic-shape expressions are sympy srepr strings, e.g. "Mul(Integer(16), Symbol('s0', positive=True))",
# and torch passes them to sympy.sympify, which evals. We accept only numbers, operators, quoted symbol names
# (s0, u3, zuf1, r0_2) or numbers, and the sympy names below: no attributes, subscripts, other names or strings,
# so the eval cannot reach builtins.
_EXPR_TOKEN_RE = re.compile(
    r"\s+|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|'[^'\\]*'|\"[^\"\\]*\"|\*\*|//|[-+*/%(),<>=!&|~^]"
)
_SYMBOL_RE = re.compile(r"^[a-z][a-z0-9_]*[0-9]$")
_NUMBER_RE = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$")
_EXPR_NAMES = frozenset(
    {
        # torch.utils._sympy.functions (the deserializer's `sympy_functions`)
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
        "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
        "ToFloat", "Identity", "OpaqueUnaryFn_sqrt", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or",
        # sympy core, as srepr writes it
        "Symbol", "Dummy", "Integer", "Float", "Rational", "Half", "One", "Zero", "NegativeOne", "Add", "Mul", "Pow",
        "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan",
        "LessThan", "GreaterThan", "Equality", "Unequality", "And", "Or", "Not", "BooleanTrue", "BooleanFalse",
        "true", "false", "True", "False", "oo", "Infinity", "NegativeInfinity", "floor", "ceiling", "sqrt",
        "Piecewise", "ITE", "ExprCondPair", "precision",
        # symbol assumptions (keyword arguments of Symbol)
        "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "infinite", "zero",
        "nonzero", "even", "odd", "rational", "commutative", "extended_real", "complex", "prime",
    }
)  # fmt: skip

_reader_lock = threading.Lock()


def _check_target(target: str, where: str) -> None:
    if target.startswith("#"):
        raise UnsafeModelError(f"refused: {where} calls an extension operator '{target}'; {_REFUSED}")
    if m := _HOP_RE.match(target):
        if m.group(1) not in _SAFE_HIGHER_ORDER:
            raise UnsafeModelError(f"refused: {where} uses higher-order operator '{target}'; {_REFUSED}")
        return
    if m := _OP_RE.match(target):
        namespace, name, overload = m.groups()
        if any(word in name for word in _DENIED_OP_WORDS):
            raise UnsafeModelError(f"refused: {where} calls '{target}', which touches files or loads code; {_REFUSED}")
        try:
            op = getattr(getattr(getattr(torch.ops, namespace), name), overload)
        except (AttributeError, RuntimeError) as exc:
            raise InvalidModelError(
                f"{where} calls operator '{target}', which this PyTorch does not have (custom operator libraries "
                f"are not loaded): {exc}"
            ) from exc
        if not isinstance(op, torch._ops.OpOverload):
            raise UnsafeModelError(f"refused: {where} target '{target}' is not an operator; {_REFUSED}")
        return
    if (m := _OPERATOR_RE.match(target)) and m.group(1) in _SAFE_OPERATOR and hasattr(operator, m.group(1)):
        return
    if (m := _MATH_RE.match(target)) and callable(getattr(math, m.group(1), None)):
        return
    if (m := _SYM_RE.match(target)) and callable(getattr(torch, m.group(1), None)):
        return
    raise UnsafeModelError(f"refused: {where} calls '{target[:200]}', which is not a PyTorch operator; {_REFUSED}")


def _check_expr(expr: str, where: str) -> None:
    pos = 0
    while pos < len(expr):
        m = _EXPR_TOKEN_RE.match(expr, pos)
        if m is None:
            raise UnsafeModelError(
                f"refused: {where} has a symbolic-shape expression with unexpected text at "
                f"'{expr[pos : pos + 20]}' (it would be evaluated); {_REFUSED}"
            )
        token = m.group(0)
        if token[0] in "'\"":
            if not (_SYMBOL_RE.match(token[1:-1]) or _NUMBER_RE.match(token[1:-1])):
                raise UnsafeModelError(
                    f"refused: {where} has a symbolic-shape expression with the string {token[:40]} "
                    f"(it would be evaluated); {_REFUSED}"
                )
        elif (token[0].isalpha() or token[0] == "_") and token not in _EXPR_NAMES and not _SYMBOL_RE.match(token):
            raise UnsafeModelError(
                f"refused: {where} has a symbolic-shape expression naming '{token[:40]}' (it would be evaluated); "
                f"{_REFUSED}"
            )
        pos = m.end()


def _walk_program(node: Any, where: str) -> None:
    """Check every node target, operator argument and symbolic expression in a serialized program."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            target = item.get("target")
            if isinstance(target, str) and "inputs" in item and "outputs" in item:
                _check_target(target, f"{where} node '{item.get('name', '?')}'")
            for key, value in item.items():
                if key == "as_operator" and isinstance(value, str):
                    _check_target(value, f"{where} operator argument")
                elif key == "expr_str" and isinstance(value, str):
                    _check_expr(value, where)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))


def _check_weights_only_pickle(data: bytes, what: str) -> None:
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        detail = f"global {found.group(1)}" if found else type(exc).__name__
        raise UnsafeModelError(
            f"refused: {what} in the .pt2 archive is a pickle that would execute code ({detail}); {_REFUSED}"
        ) from exc


def _read_json(zf: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(zf.read(name))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
        raise InvalidModelError(f"the .pt2 archive's {name} is missing or corrupt: {exc}") from exc


def check_pt2_archive(path: str | Path) -> None:
    """Refuse `.pt2` archives whose loading could run code; raises UnsafeModelError / InvalidModelError."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidModelError(f"the .pt2 archive is truncated or corrupt: {exc}; upload the complete file") from exc
    with zf:
        prefix, entries = zip_entries(zf)
        full = {e: f"{prefix}/{e}" if prefix else e for e in entries}
        if "version" in entries or not prefix:
            raise InvalidModelError(
                "this .pt2 uses the pre-2.8 archive layout, which this PyTorch cannot read safely; "
                "save it again with torch.export.save"
            )
        if any(e.startswith("data/aotinductor/") for e in entries):
            raise UnsafeModelError(
                f"refused: the .pt2 contains AOTInductor compiled code (data/aotinductor/), which is loaded as "
                f"native code; {_REFUSED}"
            )
        models = [e for e in entries if e.startswith("models/") and e.endswith(".json")]
        if "models/model.json" not in entries:
            raise InvalidModelError(
                f"the .pt2 archive has no models/model.json (has: {', '.join(models) or 'no programs'}); "
                "save it with torch.export.save"
            )
        for entry in entries:
            name = entry.rsplit("/", 1)[-1]
            if entry.startswith(("data/weights/", "data/constants/")) and name.endswith(".pt"):
                # legacy weight files go through torch.load with a weights_only=False fallback
                _check_weights_only_pickle(zf.read(full[entry]), entry)
            elif entry.startswith("data/sample_inputs/"):
                _check_weights_only_pickle(zf.read(full[entry]), "the sample inputs")
        for model in models:
            model_name = model[len("models/") : -len(".json")]
            for kind in ("weights", "constants"):
                config_name = f"data/{kind}/{model_name}_{kind}_config.json"
                if config_name not in full:
                    continue
                config = _read_json(zf, full[config_name]).get("config", {})
                for fqn, payload in config.items():
                    path_name = str(payload.get("path_name", ""))
                    if "/" in path_name or ".." in path_name:
                        raise InvalidModelError(f"the .pt2 {kind} entry '{fqn}' has a bad path '{path_name}'")
                    if path_name.startswith(("custom_obj", "opaque_obj")):
                        raise UnsafeModelError(
                            f"refused: the .pt2 constant '{fqn}' is a pickled Python/TorchBind object; {_REFUSED}"
                        )
                    if payload.get("use_pickle"):
                        entry = f"data/{kind}/{path_name}"
                        if entry not in full:
                            raise InvalidModelError(f"the .pt2 archive is missing {entry}")
                        _check_weights_only_pickle(zf.read(full[entry]), f"{kind[:-1]} '{fqn}'")
            _walk_program(_read_json(zf, full[model]), f"program '{model_name}'")


class _WeightsOnlyTorch:
    """`torch` as torch's .pt2 reader sees it while we load: `load` always uses weights_only=True."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("weights_only", None)  # whatever torch's reader asked for, never unpickle code
        return torch.load(f, *args, weights_only=True, **kwargs)


class _NoPickle:
    def __getattr__(self, name: str) -> Any:
        import pickle

        return getattr(pickle, name)

    @staticmethod
    def loads(*_: Any, **__: Any) -> Any:
        raise UnsafeModelError(f"refused: the .pt2 contains a pickled Python object; {_REFUSED}")


@contextmanager
def _hardened_reader() -> Iterator[None]:
    """Second line of defence behind check_pt2_archive: no unrestricted unpickling inside torch's reader."""
    import torch._export.serde.serialize as serde
    import torch.export.pt2_archive._package as package

    with _reader_lock:
        saved = (package.torch, serde.torch, package.pickle)
        package.torch, serde.torch, package.pickle = _WeightsOnlyTorch(), _WeightsOnlyTorch(), _NoPickle()  # type: ignore[assignment]
        try:
            yield
        finally:
            package.torch, serde.torch, package.pickle = saved


def load_exported_program(path: str | Path) -> ExportedProgram:
    """Check, then load a `.pt2` from an untrusted source; raises InvalidModelError / UnsafeModelError."""
    check_pt2_archive(path)
    from torch.export.pt2_archive._package import load_pt2

    try:
        with _hardened_reader(), open(path, "rb") as fh:
            # load_pt2 directly: torch.export.load falls back to the pre-2.8 reader (and its unsafe pickles) on error
            contents = load_pt2(fh)
    except (InvalidModelError, UnsafeModelError):
        raise
    except Exception as exc:
        raise InvalidModelError(f"could not read the torch.export program: {type(exc).__name__}: {exc}") from exc
    if "model" not in contents.exported_programs:
        raise InvalidModelError("the .pt2 archive has no program named 'model'; save it with torch.export.save")
    return contents.exported_programs["model"]
