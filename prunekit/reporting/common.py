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
    interval = interval_text(stats.get("ci_low"), stats.get("ci_high"), stats.get("confidence"), times)
    spread += f", {interval}" if interval else ""
    return f"{stats.get('basis', '?')}, {spread}" + (" (within noise)" if stats.get("within_noise") else "")


def interval_text(low: Any, high: Any, confidence: Any, fmt: Any = None) -> str:
    """'95% interval 0.97x-1.04x' (fmt formats each end), or '' when the interval is missing."""
    lo, hi, c = num(low), num(high), num(confidence)
    if lo is None or hi is None:
        return ""
    show = fmt or (lambda v: f"{v:.4g}")
    return (f"{c:.0%} " if c is not None else "") + f"interval {show(lo)}-{show(hi)}"


def gate_outcome(gate: Mapping[str, Any]) -> str:
    """'passed', 'failed' or 'inconclusive'; reports without `outcome` derive it from `passed`."""
    outcome = gate.get("outcome")
    if outcome in ("passed", "failed", "inconclusive"):
        return str(outcome)
    return "passed" if gate.get("passed") else "failed"


def gate_interval(gate: Mapping[str, Any]) -> str:
    """A latency or speedup gate's interval and runtime, e.g. '95% interval 0.97x-1.04x (pytorch)', or ''."""
    name = str(gate.get("name", ""))
    text = interval_text(
        gate.get("interval_low"), gate.get("interval_high"), gate.get("confidence"), lambda v: gate_value(name, v)
    )
    runtime = gate.get("runtime")
    return f"{text} ({runtime})" if text and runtime else text


@dataclass(frozen=True)
class RuntimeRow:
    """One runtime's latency before/after, its speedup with interval, and whether a speedup can exist there."""

    runtime: str
    before: str
    after: str
    speedup: str
    possible: str
    why: str


def runtime_rows(report: Mapping[str, Any]) -> list[RuntimeRow]:
    """report.runtimes formatted (empty for reports that predate it)."""
    raw = report.get("runtimes")
    rows = []
    for r in raw if isinstance(raw, list) else []:
        if not isinstance(r, Mapping):
            continue
        engine = str(r.get("engine") or "")
        name = str(r.get("runtime", "?")) + (f" ({engine})" if engine else "")
        s = r.get("speedup")
        speedup = times(get(s, "median"))
        interval = interval_text(get(s, "ci_low"), get(s, "ci_high"), get(s, "confidence"), times)
        speedup += f", {interval}" if interval else ""
        flag = r.get("speedup_possible")
        possible = "unknown" if not isinstance(flag, bool) else ("yes" if flag else "no")
        why = str(r.get("speedup_why") or "")
        note = str(r.get("note") or "")
        if note.startswith("not measured"):
            why = f"{note}; {why}" if why else note
        rows.append(
            RuntimeRow(
                name, ms(get(r, "before", "median_ms")), ms(get(r, "after", "median_ms")), speedup, possible, why
            )
        )
    return rows


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
    "max_perplexity_increase": lambda v: pct(v, 1),
}

GATE_TITLES = {
    "max_accuracy_drop": "Validation accuracy drop",
    "max_generalization_gap": "Generalization gap after (train - val)",
    "min_sparsity": "Sparsity",
    "max_latency_ms": "Latency (median)",
    "max_artifact_bytes": "Artifact size",
    "min_speedup": "Speedup",
    "max_perplexity_increase": "Validation perplexity increase",
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
    """'passed', 'gate_missed' or 'inconclusive': the report's own status, or derived from its gates when absent."""
    status = report.get("status")
    if status in ("passed", "gate_missed", "inconclusive"):
        return str(status)
    outcomes = {gate_outcome(g) for g in gates(report)}
    if "failed" in outcomes:
        return "gate_missed"
    return "inconclusive" if "inconclusive" in outcomes else "passed"


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
    if num(get(before, "val", "perplexity")) is not None or num(get(after, "val", "perplexity")) is not None:
        return _perplexity_rows(before, after) + _model_rows(report)
    for label, split in (("Train accuracy", "train"), ("Validation accuracy", "val")):
        b, a = get(before, split, "accuracy"), get(after, split, "accuracy")
        rows.append(HeadlineRow(label, pct(b), pct(a), diff_pp(b, a)))
    gb, ga = get(before, "gap"), get(after, "gap")
    rows.append(HeadlineRow("Generalization gap (train - val)", pp(gb), pp(ga), diff_pp(gb, ga)))
    drop = num(report.get("accuracy_drop"))
    if drop is not None:
        rows.append(HeadlineRow("Validation accuracy drop", DASH, pp(drop)))
    return rows + _model_rows(report)


def _perplexity_rows(before: Any, after: Any) -> list[HeadlineRow]:
    """Causal LMs: token-weighted perplexity per split and the val - train loss gap."""
    rows = []
    for label, split in (("Train perplexity", "train"), ("Validation perplexity", "val")):
        b, a = num(get(before, split, "perplexity")), num(get(after, split, "perplexity"))
        change = f"{(a / b - 1) * 100:+.1f}%" if a is not None and b else ""
        rows.append(HeadlineRow(label, _plain(b), _plain(a), change))
    gb, ga = num(get(before, "loss_gap")), num(get(after, "loss_gap"))
    rows.append(HeadlineRow("Loss gap (val - train, nats/token)", _plain(gb, 4), _plain(ga, 4)))
    return rows


def _plain(value: float | None, digits: int = 2) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _model_rows(report: Mapping[str, Any]) -> list[HeadlineRow]:
    """Sparsity, size, FLOPs, latency and fidelity rows, whatever the task."""
    rows: list[HeadlineRow] = []
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
    tb, ta = num(get(lb, "tokens_per_s")), num(get(la, "tokens_per_s"))
    if tb is not None or ta is not None:
        seq = get(la, "sequence_length") or get(lb, "sequence_length")
        rows.append(
            HeadlineRow(f"Tokens per second ({seq} per sequence)", _plain(tb, 0), _plain(ta, 0), ratio_change(tb, ta))
        )
    note = speedup_note(report)
    speedup = times(report.get("speedup")) + (f" ({note})" if note else "")
    rows.append(HeadlineRow("Speedup (latency before / after)", DASH, speedup))
    fid = report.get("fidelity")
    if isinstance(fid, Mapping) and num(fid.get("cosine_similarity")) is not None:
        rel = num(fid.get("relative_error"))
        rows.append(
            HeadlineRow(
                f"Output cosine similarity with original ({fid.get('split', '?')})",
                DASH,
                _plain(num(fid.get("cosine_similarity")), 4),
                f"relative error {rel:.4f}" if rel is not None else "",
            )
        )
    elif isinstance(fid, Mapping):
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
