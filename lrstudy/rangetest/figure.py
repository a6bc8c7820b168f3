"""The range-test figure: loss vs LR on a log axis, with a line per suggestion.

As for every figure in lrstudy, `range_test_data` extracts plain data (tested without
matplotlib) and `draw_range_test` draws it on a given axes; `range_test_figure` puts both on a
`matplotlib.figure.Figure` (Agg canvas, never pyplot state). No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lrstudy.rangetest.rules import RULES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class RangeTestPlot:
    """What the figure shows: the points up to the early stop, the suggestions, the y range."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: dict[str, float | None]
    recommended: str | None
    ylim: tuple[float, float] | None  # None: no finite smoothed loss, matplotlib chooses
    title: str


def range_test_data(result: Any) -> RangeTestPlot:
    """The plot of one range test; the points after the early-stop step are left out.

    `result` is a `RangeTestResult` (not imported here: that module imports this one)."""
    end = len(result.lrs) if result.stop_index is None else result.stop_index + 1
    return RangeTestPlot(
        lrs=list(result.lrs[:end]),
        losses=list(result.losses[:end]),
        smoothed=list(result.smoothed[:end]),
        suggestions=dict(result.suggestions),
        recommended=result.recommended,
        ylim=loss_range(result.losses[:end], result.smoothed[:end]),
        title=f"LR range test ({result.mode}, {len(result.lrs)} of {result.steps} steps)",
    )


def loss_range(losses: Sequence[float], smoothed: Sequence[float]) -> tuple[float, float] | None:
    """The y range: the descent, from the start level down to the minimum, and as much above it.

    The blow-up at the end would otherwise squash the part that matters. The start level is the
    highest smoothed loss of the first 10% of points; the raw loss can dip below the (lagging)
    smoothed curve, so its 2nd percentile is kept in view too.
    """
    raw, sm = np.asarray(losses, dtype=float), np.asarray(smoothed, dtype=float)
    finite = sm[np.isfinite(sm)]
    if not finite.size:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    raw_ok = raw[np.isfinite(raw)]
    if raw_ok.size:
        lo = min(lo, float(np.percentile(raw_ok, 2)))
    start = float(finite[: max(1, finite.size // 10)].max())
    if start - lo > 1e-3 * max(abs(lo), 1e-12):
        hi = min(hi, start + (start - lo))
    pad = 0.05 * (hi - lo or abs(hi) or 1.0)
    return lo - pad, hi + pad


def draw_range_test(data: RangeTestPlot, ax: Axes) -> None:
    """Loss (faint) and smoothed loss vs LR on a log axis, a dashed line per suggestion."""
    x = np.asarray(data.lrs, dtype=float)
    ax.plot(x, np.asarray(data.losses, dtype=float), color="0.75", lw=0.8, label="loss")
    ax.plot(x, np.asarray(data.smoothed, dtype=float), color="C0", lw=1.8, label="smoothed loss")
    if data.ylim is not None:
        ax.set_ylim(*data.ylim)
    for i, rule in enumerate(RULES):
        lr = data.suggestions.get(rule)
        if lr is None:
            continue
        main = rule == data.recommended
        ax.axvline(
            lr,
            color=f"C{i + 1}",
            ls="-" if main else "--",
            lw=2 if main else 1,
            label=f"{rule} {lr:.2g}" + (" (recommended)" if main else ""),
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(data.title)
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(True, which="major", alpha=0.3)


def range_test_figure(result: Any) -> Figure:
    """The range test as a matplotlib Figure on an Agg canvas (savefig works, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    draw_range_test(range_test_data(result), fig.add_subplot())
    return fig
