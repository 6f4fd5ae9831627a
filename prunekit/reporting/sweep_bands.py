"""The sweep section of the HTML report: the recommendation, grid points over seeds, and error-banded plots.

Reads `report.sweep_points` and `report.sweep_recommendation` as plain dicts. The plots (validation accuracy and
the train - validation gap against sparsity, one line per regularizer and schedule, shaded 95% interval) are
drawn only when some grid point ran more than one seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prunekit.reporting.common import DASH, get, num
from prunekit.reporting.html import _MPL_LOCK, _e, _mpl, _percent_axis, _style, _svg, _table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_COLORS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#be123c", "#a16207", "#475569")
_VERDICTS = {
    "clear_winner": "Clear winner",
    "within_noise": "Within noise",
    "point_estimate": "Point estimate only",
    "single_point": "Single grid point",
}
Point = Mapping[str, Any]


def sweep_points(report: Mapping[str, Any]) -> list[Point]:
    """The report's grid points (dicts), or [] for reports without them."""
    points = report.get("sweep_points")
    return [p for p in points if isinstance(p, Mapping)] if isinstance(points, list) else []


def sweep_html(report: Mapping[str, Any]) -> str:
    """The whole sweep section, or '' when the report has no grid points."""
    points = sweep_points(report)
    if not points:
        return ""
    seeds = max(int(num(p.get("n")) or 0) for p in points)
    parts = [f"<h2>Grid points ({len(points)}, up to {seeds} seed{'s' if seeds != 1 else ''} each)</h2>"]
    parts.append(_recommendation_html(report.get("sweep_recommendation")))
    parts.append(_points_table(points))
    if seeds > 1:
        parts.append(_band_plots(points))
    else:
        parts.append('<p class="muted">One seed per grid point: no intervals to plot (set sweep.seeds to 2+).</p>')
    return f'<section id="sweep">{"".join(parts)}</section>'


def _recommendation_html(rec: Any) -> str:
    if not isinstance(rec, Mapping):
        return '<p class="muted" id="sweep-recommendation">No recommendation: no validation metric was measured.</p>'
    verdict = str(rec.get("verdict", ""))
    label = _VERDICTS.get(verdict, verdict)
    return (
        f'<div class="notes" id="sweep-recommendation" data-verdict="{_e(verdict)}">'
        f"<strong>Recommendation ({_e(label)})</strong><p>{_e(rec.get('message', ''))}</p></div>"
    )


def _cell(stat: Any, scale: float, unit: str, digits: int) -> str:
    """'95.20% (94.80 to 95.60)' for a mean with its interval, the mean alone without one."""
    mean, low, high = (num(get(stat, k)) for k in ("mean", "low", "high"))
    if mean is None:
        return DASH
    head = f"{mean * scale:.{digits}f}{unit}"
    if low is None or high is None:
        return head
    return f"{head} ({low * scale:.{digits}f} to {high * scale:.{digits}f})"


def _points_table(points: Sequence[Point]) -> str:
    rows = [
        [
            _e(p.get("name", "?")),
            _e(p.get("n", DASH)),
            _e(_cell(p.get("val_accuracy"), 100, "%", 2)),
            _e(_cell(p.get("train_accuracy"), 100, "%", 2)),
            _e(_cell(p.get("gap"), 100, " pp", 2)),
            _e(_cell(p.get("val_loss"), 1, "", 4)),
            _e(_cell(p.get("train_loss"), 1, "", 4)),
        ]
        for p in points
    ]
    header = ["Grid point", "Seeds", "Val acc.", "Train acc.", "Gap", "Val loss", "Train loss"]
    table = _table(header, rows, num_cols=(1, 2, 3, 4, 5, 6))
    return f'{table}<p class="muted">Mean over seeds; in brackets the 95% Student-t interval (none for one seed).</p>'


def _lines(points: Sequence[Point]) -> dict[str, list[Point]]:
    """Points grouped into plot lines: one per regularizer, split by schedule when there are several."""
    several = len({p.get("schedule") for p in points}) > 1
    lines: dict[str, list[Point]] = {}
    for p in points:
        label = str(p.get("regularizers", "?")) + (f" / {p.get('schedule')}" if several else "")
        lines.setdefault(label, []).append(p)
    return {k: sorted(v, key=lambda p: num(p.get("sparsity")) or 0.0) for k, v in lines.items()}


def _series(line: Sequence[Point], metric: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """x (sparsity %), mean, low and high (x 100) of one line; a missing interval collapses onto the mean."""
    xs, ys, lows, highs = [], [], [], []
    for p in line:
        stat, x = p.get(metric), num(p.get("sparsity"))
        mean = num(get(stat, "mean"))
        if mean is None or x is None:
            continue
        low, high = num(get(stat, "low")), num(get(stat, "high"))
        xs.append(x * 100)
        ys.append(mean * 100)
        lows.append((mean if low is None else low) * 100)
        highs.append((mean if high is None else high) * 100)
    return xs, ys, lows, highs


def _plot_bands(points: Sequence[Point], metric: str, figure_cls: Callable[..., Figure]) -> Figure | None:
    """Mean of `metric` against sparsity, one line per regularizer, its 95% interval shaded."""
    lines = _lines(points)
    fig = figure_cls(figsize=(9, 3.8))
    ax = fig.subplots()
    drawn = 0
    for i, (label, line) in enumerate(lines.items()):
        xs, ys, lows, highs = _series(line, metric)
        if not xs:
            continue
        color = _COLORS[i % len(_COLORS)]
        if metric != "gap":  # an accuracy's t interval may pass 0% or 100%; the plot stops there
            lows, highs = [max(v, 0.0) for v in lows], [min(v, 100.0) for v in highs]
        ax.fill_between(xs, lows, highs, color=color, alpha=0.18, linewidth=0)
        ax.plot(xs, ys, color=color, marker="o", markersize=4, linewidth=1.6, label=label)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("target sparsity", fontsize=9)
    _percent_axis(ax, "x")
    if metric == "gap":
        ax.axhline(0, color="#616e7c", linewidth=0.8)
        ax.set_ylabel("train - validation accuracy (pp)", fontsize=9)
    else:
        ax.set_ylabel("validation accuracy", fontsize=9)
        _percent_axis(ax)
    ax.margins(x=0.05)
    ax.legend(fontsize=8, frameon=False, title="regularizers", title_fontsize=8)
    _style(ax)
    fig.tight_layout()
    return fig


def _band_plots(points: Sequence[Point]) -> str:
    loaded = _mpl()
    if loaded is None:
        return '<p class="muted">Plots need matplotlib where this report was rendered; it is not installed.</p>'
    matplotlib, figure_cls = loaded
    specs = [
        ("plot-sweep-accuracy", "Validation accuracy vs sparsity, over seeds", "val_accuracy"),
        ("plot-sweep-gap", "Generalization gap vs sparsity, over seeds", "gap"),
    ]
    out = []
    with _MPL_LOCK, matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "prunekit"}):
        for plot_id, title, metric in specs:
            fig = _plot_bands(points, metric, figure_cls)
            if fig is None:
                continue
            caption = "Line: mean over seeds; band: 95% Student-t interval (none where one seed finished)."
            if metric != "gap":
                caption += " Bands stop at 0% and 100%; report.json keeps the intervals as computed."
            out.append(
                f'<figure class="plot" id="{plot_id}"><h3>{_e(title)}</h3>{_svg(fig, plot_id, title)}'
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    return "".join(out)
