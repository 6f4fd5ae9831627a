"""Self-contained HTML report (inline CSS and SVG plots, no external assets); the jobs page is in jobs_page.py.

matplotlib is imported lazily, only here: the light client never needs it. Without it the page
still renders, with a note where the plots would be.
"""

from __future__ import annotations

import html
import io
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from prunekit.reporting.common import (
    DASH,
    NOT_MEASURED,
    gate_interval,
    gate_outcome,
    gate_threshold,
    gate_title,
    gate_value,
    gates,
    get,
    headline_rows,
    human_bytes,
    method_summary,
    ms,
    notes,
    num,
    overall_status,
    pct,
    pp,
    runtime_rows,
    speedup_note,
    times,
    trials,
)
from prunekit.reporting.stages import stage_table
from prunekit.reporting.transformer import transformer_section

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_LAYER_BARS = 80
BEFORE_COLOR, AFTER_COLOR, GAP_COLOR, ACCENT = "#9aa5b1", "#2563eb", "#ea580c", "#16a34a"

# Plain dingbats, not emoji: they render with ordinary fonts (no emoji font on many servers and CI browsers).
_OK = '<span class="ok">\u2713 passed</span>'
_MISSED = '<span class="bad">\u2717 missed</span>'
_UNSURE = '<span class="unsure">? inconclusive</span>'
_MARKS = {"passed": _OK, "failed": _MISSED, "inconclusive": _UNSURE}

# rcParams are process-global; the server may render from several threads at once.
_MPL_LOCK = threading.Lock()

_CSS = """
:root{--fg:#1f2933;--muted:#616e7c;--line:#e4e7eb;--bg:#f7f8fa;--ok:#15803d;--bad:#b91c1c;--card:#fff}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
background:var(--bg)}
main{max-width:1120px;margin:0 auto;padding:24px 20px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;border-bottom:1px solid var(--line);
padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
.meta{color:var(--muted);font-size:14px}form.inline{display:inline}.muted{color:var(--muted)}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-size:13px;font-weight:600;vertical-align:middle;
color:#fff;background:var(--muted)}h1 .badge{margin-left:8px}
.badge.passed,.badge.succeeded{background:var(--ok)}.badge.gate_missed,.badge.failed{background:var(--bad)}
.badge.inconclusive{background:#a16207}.unsure{color:#a16207;font-weight:600}
.badge.running{background:#2563eb}.badge.queued{background:#7c8794}.badge.canceled{background:#a16207}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px;margin:16px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .label{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.card .value{font-size:22px;font-weight:600;margin:2px 0}.card .sub{font-size:13px;color:var(--muted)}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line);font-size:14px}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#fef2f2}tr.pareto td:first-child{font-weight:600}
.notes{background:#fffbeb;border:1px solid #fcd34d;border-radius:8px;padding:8px 16px;margin:16px 0}
.notes ul{margin:6px 0;padding-left:20px}
figure.plot{margin:16px 0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px}
figure.plot svg{display:block;width:100%;height:auto}
figcaption{font-size:13px;color:var(--muted);margin-top:4px}
pre{background:#0f172a;color:#e2e8f0;padding:12px 14px;border-radius:8px;overflow:auto;font-size:13px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
footer{margin-top:40px;color:var(--muted);font-size:13px}
a{color:#1d4ed8}.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str, extra_head: str = "") -> str:
    # The empty data: icon stops the browser asking the server for /favicon.ico (a console error when missing).
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)}</title><link rel="icon" href="data:,">{extra_head}<style>{_CSS}</style></head>'
        f"<body><main>{body}</main></body></html>\n"
    )


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    num_cols: Sequence[int] = (),
    row_classes: Sequence[str] | None = None,
) -> str:
    """HTML table; cells are already escaped HTML."""
    head = "".join(f'<th class="num">{h}</th>' if i in num_cols else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for n, row in enumerate(rows):
        cells = "".join(f'<td class="num">{c}</td>' if i in num_cols else f"<td>{c}</td>" for i, c in enumerate(row))
        cls = row_classes[n] if row_classes and n < len(row_classes) else ""
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_table(items: Mapping[str, Any]) -> str:
    rows = [[f"<code>{_e(k)}</code>", _e(_plain(v))] for k, v in items.items()]
    return _table(["Key", "Value"], rows) if rows else '<p class="muted">Nothing recorded.</p>'


def _plain(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, Mapping | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


# ------------------------------------------------------------------ plots


def _mpl() -> tuple[Any, Callable[..., Figure]] | None:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except Exception:  # matplotlib missing or broken: the page renders without plots
        return None
    return matplotlib, Figure


def _svg(fig: Figure, prefix: str, label: str) -> str:
    """The figure as inline SVG: no XML prolog, no namespaces or metadata (no URLs at all), ids made unique."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    # Several figures on one page: matplotlib's ids (clip paths, markers) would collide.
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{_e(label)}" ', 1)


def _percent_axis(ax: Any, axis: str = "y") -> None:
    # As many decimals as the tick needs: a 98.5-99.0% axis must not read "99% 99% 99%".
    getattr(ax, f"{axis}axis").set_major_formatter(lambda v, _pos: f"{round(v, 6):g}%")


def _style(ax: Any) -> None:
    ax.grid(True, color="#e4e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _plot_accuracy(report: Mapping[str, Any], figure_cls: Callable[..., Figure]) -> Figure | None:
    before, after = report.get("before"), report.get("after")
    acc = {
        (phase, split): num(get(src, split, "accuracy"))
        for phase, src in (("before", before), ("after", after))
        for split in ("train", "val")
    }
    gaps = {"before": num(get(before, "gap")), "after": num(get(after, "gap"))}
    if all(v is None for v in acc.values()) and all(v is None for v in gaps.values()):
        return None
    fig = figure_cls(figsize=(9, 3.4))
    ax_acc, ax_gap = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    width = 0.38
    for i, (phase, color) in enumerate((("before", BEFORE_COLOR), ("after", AFTER_COLOR))):
        for j, split in enumerate(("train", "val")):
            v = acc[(phase, split)]
            x = j + (i - 0.5) * width
            if v is None:
                ax_acc.text(x, 2, "not\nmeasured", ha="center", va="bottom", fontsize=8, color="#616e7c")
                continue
            first = j == 0 or acc[(phase, "train")] is None
            ax_acc.bar(x, v * 100, width, color=color, label=f"{phase} compression" if first else None)
            ax_acc.text(x, v * 100 + 1, f"{v * 100:.1f}%", ha="center", va="bottom", fontsize=8)
        g = gaps[phase]
        if g is None:
            ax_gap.text(i, 0, "not\nmeasured", ha="center", va="bottom", fontsize=8, color="#616e7c")
        else:
            ax_gap.bar(i, g * 100, 0.6, color=color)
            ax_gap.text(i, g * 100, f"{g * 100:.2f} pp", ha="center", va="bottom" if g >= 0 else "top", fontsize=8)
    ax_acc.set_xticks([0, 1], ["train", "validation"])
    ax_acc.set_ylim(0, 119)
    _percent_axis(ax_acc)
    ax_acc.set_title("Top-1 accuracy", fontsize=11)
    handles, labels = ax_acc.get_legend_handles_labels()
    if handles:
        ax_acc.legend(handles, labels, loc="upper center", ncols=2, fontsize=8, frameon=False)
    ax_gap.set_xticks([0, 1], ["before", "after"])
    ax_gap.set_xlim(-0.7, 1.7)
    ax_gap.axhline(0, color="#616e7c", linewidth=0.8)
    ax_gap.set_title("Generalization gap (train - val)", fontsize=11)
    ax_gap.yaxis.set_major_formatter(lambda v, _pos: f"{v:.1f} pp")
    for ax in (ax_acc, ax_gap):
        _style(ax)
    fig.tight_layout()
    return fig


def _epoch_axis(ax: Any, epochs: Sequence[float]) -> None:
    from matplotlib.ticker import MaxNLocator

    distinct = sorted(set(epochs))
    if len(distinct) <= 12:
        ax.set_xticks(distinct)  # a short run: one tick per epoch, never "0.96 0.98 1.00"
        if len(distinct) == 1:
            ax.set_xlim(distinct[0] - 1, distinct[0] + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _plot_history(report: Mapping[str, Any], figure_cls: Callable[..., Figure]) -> Figure | None:
    history = [h for h in report.get("history") or [] if isinstance(h, Mapping)]
    if not history:
        return None

    epochs = [num(h.get("epoch")) for h in history]
    xs = [e if e is not None else i for i, e in enumerate(epochs)]

    def series(key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
        pts = [(x, num(h.get(key))) for x, h in zip(xs, history, strict=True)]
        kept = [(x, v * scale) for x, v in pts if v is not None]
        return [p[0] for p in kept], [p[1] for p in kept]

    fig = figure_cls(figsize=(10, 3.2))
    ax_loss, ax_acc, ax_sp = fig.subplots(1, 3)
    marker = "o" if len(history) <= 30 else None
    for ax, key_pairs, title in (
        (ax_loss, (("train_loss", "train"), ("val_loss", "validation")), "Loss"),
        (ax_acc, (("train_accuracy", "train"), ("val_accuracy", "validation")), "Accuracy"),
    ):
        scale = 100.0 if title == "Accuracy" else 1.0
        plotted = False
        for (key, label), color in zip(key_pairs, (AFTER_COLOR, GAP_COLOR), strict=True):
            x, y = series(key, scale)
            if y:
                ax.plot(x, y, marker=marker, markersize=3, color=color, label=label)
                plotted = True
        if plotted:
            ax.legend(fontsize=8, frameon=False)
        else:
            ax.text(0.5, 0.5, NOT_MEASURED, ha="center", va="center", transform=ax.transAxes, color="#616e7c")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("epoch", fontsize=9)
        _epoch_axis(ax, xs)
        if title == "Accuracy":
            _percent_axis(ax)
    x, y = series("sparsity", 100.0)
    if y:
        ax_sp.plot(x, y, marker=marker, markersize=3, color=ACCENT)
        ax_sp.set_ylim(0, 100)
    ax_sp.set_title("Sparsity", fontsize=11)
    ax_sp.set_xlabel("epoch", fontsize=9)
    _epoch_axis(ax_sp, xs)
    _percent_axis(ax_sp)
    for ax in (ax_loss, ax_acc, ax_sp):
        _style(ax)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def _layers_to_show(report: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], int]:
    layers = [layer for layer in get(report, "sparsity", "layers") or [] if isinstance(layer, Mapping)]
    total = len(layers)
    if total > MAX_LAYER_BARS:
        layers = [layer for layer in layers if layer.get("pruned")] or layers
    if len(layers) > MAX_LAYER_BARS:
        # Keep the largest layers (where the parameters are), in network order.
        biggest = sorted(range(len(layers)), key=lambda i: -(num(layers[i].get("params")) or 0))[:MAX_LAYER_BARS]
        layers = [layers[i] for i in sorted(biggest)]
    return layers, total


def _plot_layers(report: Mapping[str, Any], figure_cls: Callable[..., Figure]) -> Figure | None:
    layers, _total = _layers_to_show(report)
    if not layers:
        return None
    names = [str(layer.get("name", "?")) for layer in layers]
    values = [(num(layer.get("sparsity")) or 0.0) * 100 for layer in layers]
    colors = [AFTER_COLOR if layer.get("pruned") else BEFORE_COLOR for layer in layers]
    height = min(0.24 * len(layers) + 1.0, 22)
    fig = figure_cls(figsize=(9, height))
    ax = fig.subplots()
    ys = list(range(len(layers)))
    ax.barh(ys, values, color=colors, height=0.7)
    ax.set_yticks(ys, [n if len(n) <= 48 else "…" + n[-47:] for n in names], fontsize=7 if len(layers) > 30 else 8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    _percent_axis(ax, "x")
    target = num(get(report, "sparsity", "target_sparsity"))
    if target is not None:
        ax.axvline(target * 100, color=GAP_COLOR, linestyle="--", linewidth=1, label=f"target {target * 100:.0f}%")
    global_sp = num(get(report, "sparsity", "global_sparsity"))
    if global_sp is not None:
        ax.axvline(global_sp * 100, color=ACCENT, linestyle=":", linewidth=1.2, label=f"global {global_sp * 100:.1f}%")
    from matplotlib.patches import Patch

    handles = [Patch(color=AFTER_COLOR, label="pruning target"), Patch(color=BEFORE_COLOR, label="not a target")]
    line_handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + line_handles, fontsize=8, loc="lower right", frameon=True)
    ax.set_title("Sparsity per layer (share of zero weights)", fontsize=11)
    _style(ax)
    fig.tight_layout()
    return fig


def _plot_pareto(report: Mapping[str, Any], figure_cls: Callable[..., Figure]) -> Figure | None:
    pts = [t for t in trials(report) if num(t.get("val_accuracy")) is not None and num(t.get("sparsity")) is not None]
    if not pts:
        return None
    import matplotlib.colors as mcolors

    fig = figure_cls(figsize=(9, 4.6))
    ax = fig.subplots()
    xs = [(num(t.get("sparsity")) or 0) * 100 for t in pts]
    ys = [(num(t.get("val_accuracy")) or 0) * 100 for t in pts]
    gaps = [num(t.get("gap")) for t in pts]
    known = [g * 100 for g in gaps if g is not None]
    scatter_kw: dict[str, Any] = {"s": 46, "zorder": 3, "edgecolors": "#1f2933", "linewidths": 0.6}
    with_gap = [i for i, g in enumerate(gaps) if g is not None]
    without_gap = [i for i, g in enumerate(gaps) if g is None]
    if with_gap:
        vmin, vmax = min(0.0, *known), max(0.0, *known)
        norm = mcolors.Normalize(vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0)
        sc = ax.scatter(
            [xs[i] for i in with_gap], [ys[i] for i in with_gap], c=known, cmap="viridis", norm=norm, **scatter_kw
        )
        fig.colorbar(sc, ax=ax, label="generalization gap (pp)", pad=0.02)
    if without_gap:
        # Unknown gap: hollow marker, never a made-up colour.
        ax.scatter([xs[i] for i in without_gap], [ys[i] for i in without_gap], color="#ffffff", **scatter_kw)
    front = sorted((x, y) for x, y, t in zip(xs, ys, pts, strict=True) if t.get("pareto"))
    if front:
        ax.plot(
            [p[0] for p in front], [p[1] for p in front], color=GAP_COLOR, linewidth=1.5, zorder=2, label="Pareto front"
        )
        ax.scatter(
            [p[0] for p in front],
            [p[1] for p in front],
            s=130,
            facecolors="none",
            edgecolors=GAP_COLOR,
            linewidths=1.5,
            zorder=4,
        )
    baseline = num(get(report, "before", "val", "accuracy"))
    if baseline is not None:
        ax.axhline(
            baseline * 100, color="#616e7c", linestyle="--", linewidth=1, label=f"original {baseline * 100:.1f}%"
        )
    annotate_all = len(pts) <= 15
    for x, y, g, t in zip(xs, ys, gaps, pts, strict=True):
        if annotate_all or t.get("pareto"):
            text = "gap not measured" if g is None else f"gap {g * 100:.1f} pp"
            # Front points labelled above, the others below, so close pairs stay readable.
            offset = (7, 6) if t.get("pareto") else (7, -12)
            ax.annotate(text, (x, y), textcoords="offset points", xytext=offset, fontsize=7, color="#334155")
    ax.set_xlabel("sparsity", fontsize=9)
    ax.set_ylabel("validation accuracy", fontsize=9)
    _percent_axis(ax, "x")
    _percent_axis(ax)
    ax.margins(x=0.12)  # room for the labels of the right-most points
    levels = ys + ([baseline * 100] if baseline is not None else [])
    pad = max((max(levels) - min(levels)) * 0.15, 1.0)
    ax.set_ylim(min(levels) - pad, max(levels) + pad)
    ax.set_title("Accuracy vs sparsity (circled: Pareto front)", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower left", frameon=False)
    _style(ax)
    fig.tight_layout()
    return fig


def _plots(report: Mapping[str, Any]) -> str:
    loaded = _mpl()
    if loaded is None:
        return '<p class="muted">Plots need matplotlib where this report was rendered; it is not installed.</p>'
    matplotlib, figure_cls = loaded
    specs: list[tuple[str, str, Callable[[Mapping[str, Any], Callable[..., Figure]], Figure | None], str]] = [
        (
            "plot-accuracy",
            "Accuracy and generalization gap, before and after",
            _plot_accuracy,
            "Grey: original model; blue: compressed model. Gap = train accuracy - validation accuracy.",
        ),
        ("plot-history", "Training curves", _plot_history, "Per fine-tuning epoch."),
        ("plot-layers", "Per-layer sparsity", _plot_layers, ""),
        (
            "plot-pareto",
            "Accuracy vs sparsity",
            _plot_pareto,
            "One point per trial, coloured and labelled by its generalization gap.",
        ),
    ]
    out: list[str] = []
    missing: list[str] = []
    with _MPL_LOCK, matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "prunekit"}):
        for plot_id, title, fn, caption in specs:
            fig = fn(report, figure_cls)
            if fig is None:
                missing.append(title)
                continue
            if plot_id == "plot-layers":
                shown, total = _layers_to_show(report)
                if len(shown) < total:
                    caption = f"Showing {len(shown)} of {total} parameters (the largest pruning targets)."
            out.append(
                f'<figure class="plot" id="{plot_id}"><h3>{_e(title)}</h3>{_svg(fig, plot_id, title)}'
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    absent = [m for m in missing if m != "Accuracy vs sparsity"]  # only sweeps and searches have trials
    if absent:
        out.append(f'<p class="muted">No data for: {_e(", ".join(absent))}.</p>')
    return "".join(out)


# ------------------------------------------------------------------ report page


def _cards(report: Mapping[str, Any]) -> str:
    before, after = report.get("before"), report.get("after")

    def card(label: str, value: str, sub: str = "") -> str:
        return (
            f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>'
            f'<div class="sub">{_e(sub)}</div></div>'
        )

    vb, va = get(before, "val", "accuracy"), get(after, "val", "accuracy")
    tb, ta = get(before, "train", "accuracy"), get(after, "train", "accuracy")
    gb, ga = get(before, "gap"), get(after, "gap")
    sb, sa = report.get("size_before"), report.get("size_after")
    lb, la = report.get("latency_before"), report.get("latency_after")
    drop = report.get("accuracy_drop")
    cards = [
        card(
            "Validation accuracy",
            pct(va),
            f"before {pct(vb)}" + (f" · drop {pp(drop)}" if num(drop) is not None else ""),
        ),
        card("Train accuracy", pct(ta), f"before {pct(tb)}"),
        card("Generalization gap", pp(ga), f"before {pp(gb)}"),
        card(
            "Sparsity",
            pct(get(report, "sparsity", "global_sparsity"), 1),
            f"all parameters {pct(get(report, 'sparsity', 'overall_sparsity'), 1)}",
        ),
        card(
            "Artifact size", human_bytes(get(sa, "artifact_bytes")), f"before {human_bytes(get(sb, 'artifact_bytes'))}"
        ),
        card("Latency (median)", ms(get(la, "median_ms")), f"before {ms(get(lb, 'median_ms'))}"),
        card("Speedup", times(report.get("speedup")), speedup_note(report) or "latency before / after"),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def _gates_html(report: Mapping[str, Any]) -> str:
    gate_list = gates(report)
    if not gate_list:
        return '<p class="muted">No gates were configured.</p>'
    rows = []
    for g in gate_list:
        name = str(g.get("name", "?"))
        note = str(g.get("reason") or "") or gate_interval(g)  # an inconclusive gate's reason states it
        rows.append(
            [
                f"{_e(gate_title(name))} <code>{_e(name)}</code>",
                _e(gate_value(name, g.get("value"))),
                _e(gate_threshold(g)),
                _MARKS[gate_outcome(g)],
                _e(note),
            ]
        )
    classes = ["" if gate_outcome(g) == "passed" else "fail" for g in gate_list]
    return _table(["Gate", "Value", "Required", "Result", "Note"], rows, num_cols=(1, 2), row_classes=classes)


def _runtimes_html(report: Mapping[str, Any]) -> str:
    """Latency per runtime, and whether the method can make the model faster there ('' for older reports)."""
    rows = [
        [_e(r.runtime), _e(r.before), _e(r.after), _e(r.speedup), _e(r.possible), _e(r.why)]
        for r in runtime_rows(report)
    ]
    if not rows:
        return ""
    header = ["Runtime", "Latency before", "Latency after", "Speedup", "Speedup possible?", "Why"]
    return "<h3>Latency by runtime</h3>" + _table(header, rows, num_cols=(1, 2, 3))


def _stages_html(report: Mapping[str, Any]) -> str:
    """Dense, pruned, fine-tuned (and quantized) side by side ('' for reports without stages)."""
    table = stage_table(report)
    if table is None:
        return ""
    rows = [[_e(c) for c in row] for row in table.rows]
    classes = ["delivered" if i == table.delivered else "" for i in range(len(rows))]
    return '<h3 id="stages">Stages</h3>' + _table(table.header, rows, num_cols=(1, 2, 3, 4, 5), row_classes=classes)


def _transformer_html(report: Mapping[str, Any]) -> str:
    """Widths before and after transformer_structural pruning, and how it chose and recovered ('' otherwise)."""
    section = transformer_section(report)
    if section is None:
        return ""
    rows = [[_e(c) for c in row] for row in section.rows]
    facts = [[_e(k), _e(v)] for k, v in section.facts]
    return (
        '<section id="transformer"><h2>Transformer structural pruning</h2>'
        f"{_table(['Config field', 'Before', 'After', 'Change'], rows, num_cols=(1, 2, 3))}"
        f"{_table(['', ''], facts)}</section>"
    )


def _trials_html(report: Mapping[str, Any]) -> str:
    trial_list = trials(report)
    if not trial_list:
        return ""
    rows = []
    for t in trial_list:
        params = t.get("params")
        rows.append(
            [
                ("★ " if t.get("pareto") else "") + _e(t.get("name", "?")),
                _e(", ".join(f"{k}={_plain(v)}" for k, v in params.items()) if isinstance(params, Mapping) else ""),
                _e(pct(t.get("sparsity"), 1)),
                _e(pct(t.get("train_accuracy"))),
                _e(pct(t.get("val_accuracy"))),
                _e(pp(t.get("gap"))),
                _e(pp(t.get("accuracy_drop"))),
                _e(ms(t.get("latency_ms"))),
                _e(human_bytes(t.get("artifact_bytes"))),
            ]
        )
    table = _table(
        ["Trial", "Parameters", "Sparsity", "Train acc.", "Val acc.", "Gap", "Drop", "Latency", "Size"],
        rows,
        num_cols=(2, 3, 4, 5, 6, 7, 8),
    )
    return f'<h2>Trials ({len(trial_list)})</h2>{table}<p class="muted">★ = on the Pareto front.</p>'


def _yaml(value: Any) -> str:
    try:
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)
    except yaml.YAMLError:
        return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def render_report_html(report: Mapping[str, Any], job_id: str | None = None) -> str:
    """The whole report as one HTML document with inline CSS and SVG; nothing is fetched from anywhere."""
    status = overall_status(report)
    kind = str(report.get("kind") or "compress")
    title = f"prunekit {kind} report" + (f" — {job_id}" if job_id else "")
    method = method_summary(report)
    parts = [
        f'<header><h1>{_e(title)}<span class="badge {_e(status)}">{_e(status.replace("_", " "))}</span></h1>',
        '<div class="meta">',
        " · ".join(
            _e(x)
            for x in (
                f"kind {kind}",
                f"method {method}" if method else "",
                f"{report.get('input_format', '?')} → {report.get('output_format', '?')}",
                f"artifact {report['artifact_name']}" if report.get("artifact_name") else "",
                f"seed {report.get('seed')}" if report.get("seed") is not None else "",
            )
            if x
        ),
        "</div></header>",
    ]
    note_list = notes(report)
    if note_list:
        items = "".join(f"<li>{_e(n)}</li>" for n in note_list)
        parts.append(f'<section class="notes" id="notes"><strong>Read this first</strong><ul>{items}</ul></section>')
    if isinstance(report.get("dry_run"), Mapping):
        from prunekit.reporting.dry_run import dry_run_html  # late: that module uses this one's helpers

        parts.append(dry_run_html(report))  # nothing was pruned: no before/after, gates or plots to show
    else:
        parts.append(f'<section id="headline"><h2>Headline</h2>{_cards(report)}')
        rows = [[_e(r.label), _e(r.before), _e(r.after), _e(r.change)] for r in headline_rows(report)]
        parts.append(_table(["Metric", "Before", "After", "Change"], rows, num_cols=(1, 2, 3)))
        parts.append(_runtimes_html(report) + _stages_html(report) + "</section>")
        parts.append(f'<section id="gates"><h2>Gates</h2>{_gates_html(report)}</section>')
        parts.append(f'<section id="plots"><h2>Plots</h2>{_plots(report)}</section>')
    from prunekit.reporting.sweep_bands import sweep_html  # late: that module uses this one's plot helpers

    parts.append(sweep_html(report))  # '' unless a sweep report with grid points
    trials_html = _trials_html(report)
    if trials_html:
        parts.append(f'<section id="trials">{trials_html}</section>')
    if report.get("sensitivity"):
        parts.append(
            f'<section id="sensitivity"><h2>Sensitivity</h2><pre><code>{_e(_yaml(report["sensitivity"]))}</code></pre>'
            "</section>"
        )
    data = report.get("data")
    if isinstance(data, Mapping) and data:
        parts.append(f'<section id="data"><h2>Data</h2>{_kv_table(data)}</section>')
    structural = report.get("structural")
    if isinstance(structural, Mapping) and structural:
        parts.append(f'<section id="structural"><h2>Structural pruning</h2>{_kv_table(structural)}</section>')
    parts.append(_transformer_html(report))
    parts.append(
        f'<section id="spec"><h2>Spec as run</h2><pre><code>{_e(_yaml(report.get("spec") or {}))}</code></pre>'
    )
    parts.append("</section>")
    env = report.get("environment")
    parts.append(f'<section id="environment"><h2>Environment</h2>{_kv_table(env if isinstance(env, Mapping) else {})}')
    iso = report.get("isolation")
    parts.append("<h3>Isolation</h3>")
    parts.append(_kv_table(iso) if isinstance(iso, Mapping) else '<p class="muted">Not recorded.</p>')
    stages = report.get("stage_seconds")
    if isinstance(stages, Mapping) and stages:
        parts.append("<h3>Time per stage</h3>")
        stage_rows = [[_e(k), _e(f"{v:.2f} s" if num(v) is not None else DASH)] for k, v in stages.items()]
        parts.append(_table(["Stage", "Seconds"], stage_rows, num_cols=(1,)))
    extra = report.get("extra")
    if isinstance(extra, Mapping) and extra:
        parts.append(f"<h3>Extra</h3>{_kv_table(extra)}")
    parts.append("</section>")
    version = get(report, "environment", "prunekit")
    parts.append(
        f"<footer>report version {_e(report.get('report_version', '?'))} · prunekit {_e(version or '?')}</footer>"
    )
    return _page(title, "".join(parts))
