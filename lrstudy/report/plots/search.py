"""The Search figures.

Successive halving (`search_figure`): every trial, where it stopped and its value. Left: epochs
trained against the peak LR (a stopped trial sits at its rung, hollow; a finished one at the last
epoch, filled), the rungs as dotted lines. Right: the ranking metric at the stop (stopped) or at
the end (finished) against the peak LR: what each decision saw.

TPE (`tpe_figure`): the sampled configurations in the order they were sampled. Left: each one's
value and the best so far; right: its peak LR, to show where the model led the search.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrstudy.report.plots import style as S


def search_figure(points: pd.DataFrame, rungs: list[int], epochs: int, metric_label: str,
                  families: dict[str, dict]) -> Figure:  # fmt: skip
    """Args: points as `SearchSummary.points`; families: family -> {color, marker}, as
    `style.family_style` gives them (the same look as the LR sensitivity figure)."""
    n_fam = points["family"].nunique()
    legend_h = S.legend_rows(n_fam + 2, 3)
    fig, axes = S.grid_figure(1, 2, row_h=2.6, bottom=0.55 + legend_h)
    ax_e, ax_v = axes[0]
    jitter = _jitter(points)
    for fam, g in points.groupby("family", sort=True):
        look = families.get(fam, _PLAIN)
        for stopped, part in g.groupby("stopped"):
            kw = _marker(look, hollow=stopped)
            y = part["epochs_trained"] * jitter[part.index]
            ax_e.scatter(part["lr"], y, **kw)
            ax_v.scatter(part["lr"], part["value"], **kw)
    for r in rungs:
        ax_e.axhline(r, color="#999999", lw=0.8, ls=":", zorder=1)
    ax_e.axhline(epochs, color="#444444", lw=0.8, zorder=1)
    for ax in (ax_e, ax_v):
        S.log_axis(ax, "x", points["lr"], pad=1.4)
        ax.set_xlabel("peak LR")
    S.log_axis(ax_e, "y", [*rungs, epochs], pad=1.3)
    ax_e.set_yticks(sorted({*rungs, epochs}))
    ax_e.set_yticklabels([str(v) for v in sorted({*rungs, epochs})])
    ax_e.set_ylabel("epochs trained")
    ax_e.set_title("where each trial stopped (rungs dotted)")
    ax_v.set_ylabel(metric_label)
    ax_v.set_title(f"{metric_label} at the stop (hollow) or the end (filled)")
    _legend(fig, ax_e, points, families, [
        ax_e.scatter([], [], label="trained to the end", **_marker(_PLAIN, hollow=False)),
        ax_e.scatter([], [], label="stopped at a rung", **_marker(_PLAIN, hollow=True)),
    ])  # fmt: skip
    return fig


_PLAIN = {"color": "#555555", "marker": "o"}  # a family without a style; the legend's keys


def _marker(look: dict, *, hollow: bool) -> dict:
    """A family's marker, filled or hollow: the two kinds of point each search figure tells apart."""
    return {"marker": look["marker"], "s": 26, "linewidths": 1.1, "zorder": 3,
            "edgecolors": look["color"], "facecolors": "none" if hollow else look["color"]}  # fmt: skip


def _legend(fig: Figure, ax, points: pd.DataFrame, families: dict, kinds: list) -> None:
    """One entry per family (its colour and marker), then the figure's own kinds of point."""
    handles = [ax.scatter([], [], label=f, **_marker(families.get(f, _PLAIN), hollow=False))
               for f in sorted(points["family"].unique())]  # fmt: skip
    fig.legend(handles=handles + kinds, loc="lower center", ncol=3, fontsize=8, frameon=False)


def _jitter(points: pd.DataFrame) -> pd.Series:
    """A small multiplicative offset per seed of one LR, so seeds stopped at the same rung do not
    hide each other (the y axis is log: 1.0, 1.04, 0.96, ...)."""
    rank = points.groupby(["family", "lr", "epochs_trained"]).cumcount()
    sign = np.where(rank % 2, -1.0, 1.0)
    return pd.Series(1.0 + 0.04 * sign * ((rank + 1) // 2), index=points.index)


def tpe_figure(points: pd.DataFrame, metric_label: str, families: dict[str, dict]) -> Figure:
    """Args: points as `TpeSummary.points`; families as for `search_figure`. Random start-up
    draws are hollow, the model's picks filled; a diverged configuration is an x at the bottom."""
    n_fam = points["family"].nunique()
    fig, axes = S.grid_figure(1, 2, row_h=2.6, bottom=0.55 + S.legend_rows(n_fam + 3, 3))
    ax_v, ax_lr = axes[0]
    x = points["slot"] + 1
    finite = points["value"][np.isfinite(points["value"])]
    floor = float(finite.min()) if len(finite) else 0.0
    for fam, g in points.groupby("family", sort=True):
        look = families.get(fam, _PLAIN)
        for startup, part in g.groupby("startup"):
            kw = _marker(look, hollow=startup)
            ok = part[~part["diverged"]]
            ax_v.scatter(ok["slot"] + 1, ok["value"], **kw)
            ax_lr.scatter(part["slot"] + 1, part["lr"], **kw)
            bad = part[part["diverged"]]
            if len(bad):
                ax_v.scatter(bad["slot"] + 1, [floor] * len(bad), marker="x", s=30,
                             color=look["color"], zorder=3)  # fmt: skip
    ax_v.step(x, points["best_so_far"], where="post", color="#222222", lw=1.2, zorder=2)
    S.log_axis(ax_lr, "y", points["lr"], pad=1.4)
    for ax in (ax_v, ax_lr):
        ax.set_xlabel("configuration, in sampling order")
        ax.set_xticks(_ticks(len(points)))
    ax_v.set_ylabel(metric_label)
    ax_v.set_title(f"{metric_label} of each configuration; line: best so far")
    ax_lr.set_ylabel("peak LR")
    ax_lr.set_title("where the search sampled")
    _legend(fig, ax_v, points, families, [
        ax_v.scatter([], [], label="random start-up draw", **_marker(_PLAIN, hollow=True)),
        ax_v.scatter([], [], label="sampled by the model", **_marker(_PLAIN, hollow=False)),
        ax_v.scatter([], [], marker="x", s=30, color=_PLAIN["color"], label="diverged"),
    ])  # fmt: skip
    return fig


def _ticks(n: int) -> list[int]:
    """At most ~10 integer ticks from 1 to n."""
    step = max(1, -(-n // 10))
    return list(range(1, n + 1, step))
