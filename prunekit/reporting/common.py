"""Number formatting and the headline rows shared by the markdown, JUnit and HTML renderers.

Everything reads the report as a plain dict (report.json) and treats every field as optional:
a missing or null number is shown as "not measured", never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NOT_MEASURED = "not measured"
DASH = "—"


def num(value: Any) -> float | None:
    """A finite float, or None for null, missing, non-numeric, NaN or infinite values."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def get(obj: Any, *path: str) -> Any:
    """Nested lookup that returns None as soon as a level is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def pct(value: Any, digits: int = 2, missing: str = NOT_MEASURED) -> str:
    """A fraction as a percentage: 0.9123 -> '91.23%'."""
    v = num(value)
    return missing if v is None else f"{v * 100:.{digits}f}%"


def pp(value: Any, digits: int = 2, signed: bool = False, missing: str = NOT_MEASURED) -> str:
    """A fraction difference as percentage points: 0.012 -> '1.20 pp'."""
    v = num(value)
    if v is None:
        return missing
    v *= 100
    if abs(v) < 0.5 * 10**-digits:
        v = 0.0  # no "-0.00 pp"
    return f"{v:+.{digits}f} pp" if signed else f"{v:.{digits}f} pp"


def human_bytes(value: Any, missing: str = NOT_MEASURED) -> str:
    v = num(value)
    if v is None:
        return missing
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{int(v)} B" if unit == "B" else f"{v:.2f} {unit}"
        v /= 1024
    return f"{v:.2f} GiB"  # pragma: no cover - loop always returns


def human_count(value: Any, missing: str = NOT_MEASURED) -> str:
    v = num(value)
    if v is None:
        return missing
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{int(v)}"


def ms(value: Any, missing: str = NOT_MEASURED) -> str:
    v = num(value)
    if v is None:
        return missing
    return f"{v:.3f} ms" if v < 1 else f"{v:.2f} ms"


def times(value: Any, missing: str = NOT_MEASURED) -> str:
    v = num(value)
    return missing if v is None else f"{v:.2f}\u00d7"


def speedup_note(report: Mapping[str, Any]) -> str:
    """'torchscript vs torchscript, middle half 0.97-1.03x (within noise)' from report.speedup_stats, or ''."""
    stats = report.get("speedup_stats")
    if not isinstance(stats, Mapping):
        return ""
    spread = f"middle half {times(stats.get('low'))}-{times(stats.get('high'))}"
    return f"{stats.get('basis', '?')}, {spread}" + (" (within noise)" if stats.get("within_noise") else "")


def ratio_change(before: Any, after: Any) -> str:
    """Relative change after/before as '-45.0%'; empty when either side is unknown or before is 0."""
    b, a = num(before), num(after)
    if b is None or a is None or b == 0:
        return ""
    return f"{(a / b - 1) * 100:+.1f}%"


def diff_pp(before: Any, after: Any) -> str:
    b, a = num(before), num(after)
    if b is None or a is None:
        return ""
    return pp(a - b, signed=True)


# Units of the gates GatesSpec defines; unknown gates fall back to a plain number.
_GATE_FORMAT = {
    "max_accuracy_drop": lambda v: pp(v),
    "max_generalization_gap": lambda v: pp(v),
    "min_sparsity": lambda v: pct(v, 1),
    "max_latency_ms": lambda v: ms(v),
    "max_artifact_bytes": lambda v: human_bytes(v),
    "min_speedup": lambda v: times(v),
}

GATE_TITLES = {
    "max_accuracy_drop": "Validation accuracy drop",
    "max_generalization_gap": "Generalization gap after (train - val)",
    "min_sparsity": "Sparsity",
    "max_latency_ms": "Latency (median)",
    "max_artifact_bytes": "Artifact size",
    "min_speedup": "Speedup",
}


def gate_value(name: str, value: Any) -> str:
    v = num(value)
    if v is None:
        return NOT_MEASURED
    fmt = _GATE_FORMAT.get(name)
    return fmt(v) if fmt else f"{v:.6g}"


def gate_threshold(gate: Mapping[str, Any]) -> str:
    comparison = str(gate.get("comparison") or "")
    symbol = {"<=": "≤", ">=": "≥"}.get(comparison, comparison)
    return f"{symbol} {gate_value(str(gate.get('name', '')), gate.get('threshold'))}".strip()


def gate_title(name: str) -> str:
    return GATE_TITLES.get(name, name)


def gates(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = report.get("gates")
    return [g for g in raw if isinstance(g, Mapping)] if isinstance(raw, list) else []


def trials(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = report.get("trials")
    return [t for t in raw if isinstance(t, Mapping)] if isinstance(raw, list) else []


def notes(report: Mapping[str, Any]) -> list[str]:
    raw = report.get("notes")
    return [str(n) for n in raw] if isinstance(raw, list) else []


def overall_status(report: Mapping[str, Any]) -> str:
    """'passed' or 'gate_missed': the report's own status, or derived from its gates when absent."""
    status = report.get("status")
    if status in ("passed", "gate_missed"):
        return str(status)
    return "gate_missed" if any(not g.get("passed") for g in gates(report)) else "passed"


@dataclass(frozen=True)
class HeadlineRow:
    label: str
    before: str
    after: str
    change: str = ""


def headline_rows(report: Mapping[str, Any]) -> list[HeadlineRow]:
    """The before/after numbers a reader looks at first, formatted; unknown values say so."""
    rows: list[HeadlineRow] = []
    before, after = report.get("before"), report.get("after")
    for label, split in (("Train accuracy", "train"), ("Validation accuracy", "val")):
        b, a = get(before, split, "accuracy"), get(after, split, "accuracy")
        rows.append(HeadlineRow(label, pct(b), pct(a), diff_pp(b, a)))
    gb, ga = get(before, "gap"), get(after, "gap")
    rows.append(HeadlineRow("Generalization gap (train - val)", pp(gb), pp(ga), diff_pp(gb, ga)))
    drop = num(report.get("accuracy_drop"))
    if drop is not None:
        rows.append(HeadlineRow("Validation accuracy drop", DASH, pp(drop)))

    sp = report.get("sparsity")
    target = num(get(sp, "target_sparsity"))
    rows.append(
        HeadlineRow(
            "Sparsity (pruned layers)",
            DASH,
            pct(get(sp, "global_sparsity"), 1),
            f"target {pct(target, 1)}" if target is not None else "",
        )
    )
    sb, sa = report.get("size_before"), report.get("size_after")
    rows.append(
        HeadlineRow("Sparsity (all parameters)", pct(_zero_fraction(sb), 1), pct(get(sp, "overall_sparsity"), 1))
    )
    nb, na = get(sb, "params_nonzero"), get(sa, "params_nonzero")
    rows.append(HeadlineRow("Nonzero parameters", human_count(nb), human_count(na), ratio_change(nb, na)))
    bb, ba = get(sb, "artifact_bytes"), get(sa, "artifact_bytes")
    rows.append(HeadlineRow("Artifact size", human_bytes(bb), human_bytes(ba), ratio_change(bb, ba)))
    zb, za = get(sb, "artifact_zipped_bytes"), get(sa, "artifact_zipped_bytes")
    if num(zb) is not None or num(za) is not None:
        rows.append(HeadlineRow("Artifact size (zipped)", human_bytes(zb), human_bytes(za), ratio_change(zb, za)))
    fb, fa = get(sb, "flops_effective"), get(sa, "flops_effective")
    if num(fb) is not None or num(fa) is not None:
        rows.append(
            HeadlineRow("FLOPs per sample (nonzero weights)", human_count(fb), human_count(fa), ratio_change(fb, fa))
        )

    lb, la = report.get("latency_before"), report.get("latency_after")
    label = "Latency (median)"
    device = get(la, "device") or get(lb, "device")
    batch = get(la, "batch_size") or get(lb, "batch_size")
    if device or batch:
        label += f", {device or '?'}, batch {batch or '?'}"
    rows.append(
        HeadlineRow(
            label,
            ms(get(lb, "median_ms")),
            ms(get(la, "median_ms")),
            ratio_change(get(lb, "median_ms"), get(la, "median_ms")),
        )
    )
    note = speedup_note(report)
    speedup = times(report.get("speedup")) + (f" ({note})" if note else "")
    rows.append(HeadlineRow("Speedup (latency before / after)", DASH, speedup))
    fid = report.get("fidelity")
    if isinstance(fid, Mapping):
        kl = num(fid.get("kl_divergence"))
        rows.append(
            HeadlineRow(
                f"Top-1 agreement with original ({fid.get('split', '?')})",
                DASH,
                pct(fid.get("top1_agreement")),
                f"KL {kl:.4f} nats" if kl is not None else "",
            )
        )
    return rows


def _zero_fraction(size: Any) -> float | None:
    total, nonzero = num(get(size, "params_total")), num(get(size, "params_nonzero"))
    if total is None or nonzero is None or total <= 0:
        return None
    return 1 - nonzero / total


def method_summary(report: Mapping[str, Any]) -> str:
    """'magnitude, global, oneshot' style one-liner of the pruning spec, best effort."""
    pruning = get(report, "spec", "pruning")
    if not isinstance(pruning, Mapping):
        return ""
    parts = [str(pruning.get(k)) for k in ("method", "scope") if pruning.get(k)]
    schedule = pruning.get("schedule")
    if isinstance(schedule, Mapping) and schedule.get("kind"):
        parts.append(str(schedule["kind"]))
    return ", ".join(parts)
