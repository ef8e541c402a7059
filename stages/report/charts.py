"""Charts of the report: matplotlib figures on the Agg canvas (no pyplot, so the host's backend is
untouched) with the report's style, saved as base64 PNG <img> tags; horizontal and grouped bars.
"""
from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from stages.report.markup import esc, fmt


def figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **subplots: Any):
    """A figure on its own Agg canvas and its axes (always a 2-D array)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return fig, axes


def style():
    """The report's matplotlib settings, as a context manager."""
    import matplotlib

    return matplotlib.rc_context({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
                                  "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8, "legend.frameon": False,
                                  "svg.hashsalt": "curate", "path.simplify": True})


def img(fig, alt: str) -> str:
    """The figure as a base64 PNG <img class="chart">."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<figure><img class="chart" alt="{esc(alt)}" src="data:image/png;base64,{data}"></figure>'


def colors(n: int) -> list:
    """n distinct colours: tab10, tab20, or turbo for more."""
    import matplotlib

    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def truncate_label(label: str, n: int = 40) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def hbar_chart(labels: list[str], values: list[float], title: str, xlabel: str, color: str = "#c0392b") -> str:
    with style():
        fig, ax = figure(8, 0.5 + 0.24 * max(len(labels), 1))
        ax = ax[0, 0]
        y = np.arange(len(labels))
        ax.barh(y, values, color=color)
        ax.set_yticks(y, [truncate_label(str(label), 50) for label in labels])
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        for yi, value in zip(y, values):
            ax.annotate(fmt(value), (value, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        return img(fig, title)


def grouped_bars(categories: list[str], series: dict[str, list[float]], title: str, ylabel: str, ax=None, rotate: bool = False,
                 zoom: bool = False):
    """Grouped vertical bars on `ax`, or a new figure returned as an <img>. zoom: the y axis starts
    near the smallest value instead of 0 (losses differ in the second digit)."""
    own = ax is None
    with style():
        if own:
            fig, axs = figure(max(6, min(14, 1.2 + 0.45 * len(categories) * max(len(series), 1))), 3.4)
            ax = axs[0, 0]
        x = np.arange(len(categories))
        width = 0.8 / max(len(series), 1)
        for i, (name, vals) in enumerate(series.items()):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name, color=colors(max(len(series), 1))[i])
        ax.set_xticks(x, [truncate_label(c, 24) for c in categories], rotation=45 if rotate or len(categories) > 8 else 0,
                      ha="right" if rotate or len(categories) > 8 else "center")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(axis="x", visible=False)
        vals = np.array([v for vs in series.values() for v in vs], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        if zoom and len(vals) and vals.min() > 0:
            lo, hi = float(vals.min()), float(vals.max())
            span = (hi - lo) or abs(hi) * 0.1 or 1.0
            ax.set_ylim(max(0.0, lo - 0.6 * span), hi + 0.15 * span)
        if len(series) > 1:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0)) if own else ax.legend()
        return img(fig, title) if own else ""
