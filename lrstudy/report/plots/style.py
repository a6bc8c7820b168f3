"""What every figure of a report shares: colours, style, layout helpers and the deterministic
SVG renderer.

Figures follow one pattern: `*_data(frames) -> plain data`, `draw_*(data, ax)` on given axes, and
`*_figure(data) -> Figure` for the layout. The central LR-sensitivity figure lives in
sensitivity.py, the other LR-axis figures in lr.py, curves over steps in curves.py, the other
swept axes and robustness in axes.py. matplotlib.figure.Figure only, never pyplot.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]  # fmt: skip
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h"]  # no "*": it marks the best configuration
VERDICT_COLORS = {
    "too_low": "#6baed6",
    "good": "#31a354",
    "too_high": "#fd8d3c",
    "diverged": "#252525",
    "at_chance": "#9e9ac8",
}
DARK_VERDICTS = {"good", "diverged"}  # white text on these colours, black on the others
# a loss/grad-norm axis goes log only when its values span at least half a decade
LOG_MIN_RATIO = 3.0
LR_CMAP = mpl.colormaps["viridis"].resampled(256)  # sequential: dark = low LR, yellow = high LR
SVG_MAX_BYTES = 700_000  # above this a figure is embedded as PNG instead (page size budget)
_ROUND = re.compile(r"(\.\d)\d+")
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.titley": 1.01,  # a fixed title position: auto-placement measured ~1/3 of render time
    "svg.fonttype": "none",  # text stays text: smaller files, page fonts, selectable
    "path.simplify": True,
}


@contextmanager
def plot_style() -> Iterator[None]:
    """The report's matplotlib settings, without touching global state for the caller."""
    with mpl.rc_context(STYLE):
        yield


def optimizer_colors(optimizers) -> dict[str, str]:
    """One fixed colour per optimizer, keyed by sorted name, for every figure of a page."""
    return {o: PALETTE[i % len(PALETTE)] for i, o in enumerate(sorted(set(optimizers)))}


def schedule_styles(schedules) -> dict[str, str]:
    return {s: LINESTYLES[i % len(LINESTYLES)] for i, s in enumerate(sorted(set(schedules)))}


def lr_norm(lrs) -> mpl.colors.Normalize:
    lrs = [v for v in lrs if np.isfinite(v) and v > 0] or [1.0]
    lo, hi = min(lrs), max(lrs)
    return mpl.colors.LogNorm(lo / 1.5, hi * 1.5) if hi > lo else mpl.colors.LogNorm(lo / 2, lo * 2)


def lr_color(norm, lr: float) -> tuple:
    return LR_CMAP(0.9 * float(norm(lr)))  # stop before the palest yellow: stays readable on white


def grid_figure(nrows: int, ncols: int, *, row_h: float = 2.4, width: float = 11.0, left: float = 0.8,
                right: float = 0.25, top: float = 0.35, bottom: float = 0.55, hgap: float = 0.7,
                wgap: float = 0.8):  # fmt: skip
    """Figure with an nrows x ncols grid whose margins and gaps are given in inches.

    A fixed layout instead of constrained layout: that engine doubled the render time of the
    report's figures (measured 1.1 s vs 0.5 s for 8 log-scale panels) and the sizes here are known.
    """
    height = top + bottom + nrows * row_h + (nrows - 1) * hgap
    axes_w = (width - left - right - (ncols - 1) * wgap) / ncols
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={
        "left": left / width, "right": 1 - right / width, "bottom": bottom / height,
        "top": 1 - top / height, "wspace": wgap / axes_w, "hspace": hgap / row_h})  # fmt: skip
    return fig, axes


def panel_grid(n: int, **layout) -> tuple[Figure, list]:
    """Small multiples: n panels in 2 columns (1 when n = 1); `layout` goes to `grid_figure`.
    Returns the figure and its first n axes; the unused cells are hidden."""
    ncols = 2 if n > 1 else 1
    fig, axes = grid_figure(-(-n // ncols), ncols, **layout)
    axes = list(axes.ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def log_tick(v: float, _pos=None) -> str:
    """Short plain labels for log axes: 0.001 ... 1000, else 1e-5 / 3e4 (never 1e-05 or mathtext)."""
    if not (v > 0 and np.isfinite(v)):
        return ""
    e = int(np.floor(np.log10(v) + 1e-9))
    if -3 <= e <= 3:
        return f"{v:g}"
    m = v / 10.0**e
    return f"1e{e}" if abs(m - 1) < 1e-6 else f"{m:.2g}e{e}"


def log_axis(ax, which: str, values, pad: float | None = None, min_ratio: float = 1.0) -> bool:
    """Log scale on `which` axis if `values` hold a positive finite number (else the axis stays
    linear: log-scaling an empty axis raises). Plain tick labels ('0.001', not mathtext '10^-3':
    mathtext parsing was ~20% of the render time), no minor ticks (they were another ~20%).
    With `pad`, the limits are [min / pad, max * pad]. Values spanning less than `min_ratio`
    (max / min) stay linear: a loss between 2.0 and 2.4 reads better that way. Returns whether the
    scale is log."""
    v = np.asarray(
        [x for x in np.ravel(np.asarray(values, dtype=float)) if np.isfinite(x) and x > 0]
    )
    if not len(v) or v.max() < min_ratio * v.min():
        return False
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_formatter(mpl.ticker.FuncFormatter(log_tick))
    axis.set_minor_locator(mpl.ticker.NullLocator())
    if np.log10(v.max() / v.min()) < 2.5:  # a decade or two: label 1-2-5 steps, not just 1 tick
        axis.set_major_locator(mpl.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    if pad:
        (ax.set_xlim if which == "x" else ax.set_ylim)(v.min() / pad, v.max() * pad)
    return True


def legend_rows(n: int, ncol: int) -> float:
    """Inches a figure legend of n entries in ncol columns needs below the axes."""
    return 0.22 * -(-n // max(ncol, 1)) + 0.1


def colorbar_beside(fig: Figure, ax, mappable, label: str) -> None:
    """A slim colorbar just right of `ax`, outside it: the axes keep their size and alignment."""
    cax = ax.inset_axes([1.02, 0.0, 0.025, 1.0])
    cb = fig.colorbar(mappable, cax=cax)
    if isinstance(mappable.norm, mpl.colors.LogNorm):
        cb.ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(log_tick))
        cb.ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    cb.minorticks_off()
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def render(fig: Figure, name: str, points: int = 0) -> dict:
    """Figure → {'name', 'kind', 'markup', 'bytes', 'points'}: inline SVG, or a PNG data URI when
    the SVG would be too big. Deterministic: a fixed hash salt (per figure, so ids of different
    figures on one page never collide) and no date metadata. `points` is passed through: the
    history points the figure's curves are drawn with (counted from its data, not its artists)."""
    with mpl.rc_context({**STYLE, "svg.hashsalt": f"lrstudy-{name}"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE: the markup is inlined
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    # path coordinates come with 6 decimals of a point; 1 decimal (0.13 px) looks the same and
    # makes the page ~40% smaller. Only d="..." is touched, never text.
    svg = re.sub(r' d="([^"]*)"', lambda m: ' d="' + _ROUND.sub(r"\1", m.group(1)) + '"', svg)
    if len(svg) <= SVG_MAX_BYTES:
        return {"name": name, "kind": "svg", "markup": svg, "bytes": len(svg), "points": points}
    import base64

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
    uri = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    return {"name": name, "kind": "png", "markup": uri, "bytes": len(uri), "points": points}


def family_style(configs: pd.DataFrame) -> dict[str, dict]:
    """family → colour (by optimizer), line style (by schedule) and marker (one per family of the
    same optimizer), so that every family of an LR-axis figure can be told apart, even one with a
    single LR (a lone point shows no line style)."""
    colors = optimizer_colors(configs["optimizer"])
    styles = schedule_styles(configs["schedule"])
    out: dict[str, dict] = {}
    seen: dict[str, int] = {}
    for fam, g in configs.groupby("family", sort=True):
        first = g.iloc[0]
        i = seen[first["optimizer"]] = seen.get(first["optimizer"], -1) + 1
        out[fam] = {"color": colors[first["optimizer"]], "linestyle": styles[first["schedule"]],
                    "marker": MARKERS[i % len(MARKERS)]}  # fmt: skip
    return out
