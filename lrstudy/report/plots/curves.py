"""Curves over optimizer steps: convergence (train loss, val accuracy), gradient norm, and the
LR schedules as applied. Small multiples per family; LR encoded by a sequential colormap.

`curves_data` / `schedules_data` return typed dataclasses (tested alone); `plotted_points` counts
the history points a figure's curves are drawn with, for the page's footer."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrstudy import names as N
from lrstudy.report.analyze import fmt_value
from lrstudy.report.curve_metrics import binned, downsample
from lrstudy.report.plots import style as S

PLOT_POINTS = 200  # per curve in small multiples (< the 500 cap): ~1 point per 2 px at page width


@dataclass(frozen=True)
class CurveSeries:
    """One LR of a family: seed mean and min–max band on shared steps (or step bins)."""

    lr: float
    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: int  # seeds with a curve
    n_diverged: int


@dataclass(frozen=True)
class CurvePanel:
    family: str
    optimizer: str
    series: list[CurveSeries]


@dataclass(frozen=True)
class ScheduleLine:
    """Applied LR ÷ peak LR of one representative run."""

    schedule: str
    optimizer: str
    peak: float
    x: np.ndarray
    y: np.ndarray


def plotted_points(data: list) -> int:
    """Points of the curves drawn from `curves_data` panels or `schedules_data` lines."""
    return sum(len(s.x) for p in data for s in (p.series if isinstance(p, CurvePanel) else [p]))


def _integer_steps(ax) -> None:
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))  # no step 2.5


def _by_run(history: pd.DataFrame, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    h = history[history["key"] == key]
    return {
        rid: (g["step"].to_numpy(), g["value"].to_numpy(float))
        for rid, g in h.groupby("run_id", sort=True)
    }


def _seed_stats(
    curves: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray | None, hi: float, n: int
):
    """Align seeds on exact steps (short curves) or on shared bins, then mean / min / max."""
    rows = []
    for s, v in curves:
        if grid is not None:
            y = np.full(len(grid), np.nan)
            y[np.searchsorted(grid, s)] = np.where(np.isfinite(v), v, np.nan)
        else:
            _, y = binned(s, v, n, hi)
        rows.append(y)
    x = grid if grid is not None else binned(np.array([0.0]), np.array([0.0]), n, hi)[0]
    m = np.vstack(rows)
    with warnings.catch_warnings():  # all-NaN columns (a diverged seed's tail) are expected
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, lo, up = np.nanmean(m, 0), np.nanmin(m, 0), np.nanmax(m, 0)
    keep = np.isfinite(mean)
    return x[keep], mean[keep], lo[keep], up[keep]


def curves_data(
    trials: pd.DataFrame, history: pd.DataFrame, key: str, max_points: int = PLOT_POINTS
) -> list[CurvePanel]:
    """Per family: one series per LR with seed mean, min/max band, n, diverged count."""
    by_run = _by_run(history, key)
    panels: list[CurvePanel] = []
    for fam, g in trials.groupby("family", sort=True):
        runs = [r for r in g["run_id"] if r in by_run]
        if not runs:
            continue
        steps = np.unique(np.concatenate([by_run[r][0] for r in runs]))
        grid = steps if len(steps) <= max_points else None
        series = []
        for lr, gl in g.groupby("lr", sort=True, dropna=False):
            curves = [by_run[r] for r in gl["run_id"] if r in by_run]
            if not curves:
                continue
            x, mean, lo, up = _seed_stats(curves, grid, float(steps.max()), max_points)
            series.append(CurveSeries(float(lr), x, mean, lo, up, len(curves), int(gl["diverged"].sum())))  # fmt: skip
        panels.append(CurvePanel(fam, g["optimizer"].iloc[0], series))
    return panels


def draw_curves(
    panel: CurvePanel, ax, norm, logy: bool = False, fallback_color: str = "#555"
) -> None:
    healthy = [s.mean for s in panel.series if s.n_diverged == 0] or [s.mean for s in panel.series]
    vals = np.concatenate(healthy) if healthy else np.array([])
    vals = vals[np.isfinite(vals)]
    lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
    is_log = logy and S.log_axis(ax, "y", [lo, hi], min_ratio=S.LOG_MIN_RATIO)
    # The limits frame the healthy curves; exploding runs leave through the top. Values are
    # clipped a bit above it (1e308 would overflow matplotlib's log axis).
    if is_log:
        bottom, top = lo / 1.25, hi * 1.5
    else:
        bottom, top = lo - 0.1 * (hi - lo or 1.0), hi + 0.25 * (hi - lo or 1.0)
    cap = top + 10 * (top - bottom)
    for s in panel.series:
        color = S.lr_color(norm, s.lr) if np.isfinite(s.lr) and s.lr > 0 else fallback_color
        mean, low, high = (np.minimum(v, cap) for v in (s.mean, s.lo, s.hi))
        ax.plot(s.x, mean, color=color, lw=1.2)
        if s.n > 1:
            ax.fill_between(s.x, low, high, color=color, alpha=0.15, lw=0)
        if s.n_diverged and len(s.x):
            ax.plot(s.x[-1:], mean[-1:], marker="x", color=color, ms=6, ls="none")
    if logy and len(vals):  # accuracy panels keep matplotlib's own limits
        ax.set_ylim(bottom, top)
    _integer_steps(ax)
    ax.set_title(panel.family)


def _lr_bar(fig: Figure, ax, norm) -> None:
    sm = mpl.cm.ScalarMappable(
        norm=norm, cmap=mpl.colors.ListedColormap(S.LR_CMAP(np.linspace(0, 0.9, 256)))
    )
    S.colorbar_beside(fig, ax, sm, "peak LR")


def convergence_figure(
    loss_panels: list[CurvePanel],
    acc_panels: list[CurvePanel],
    trials: pd.DataFrame,
    right_label: str = "val accuracy",
) -> Figure:
    """Rows = families; left train loss, right val accuracy or the study's own metric
    (`right_label`; shared step axis), coloured by LR."""
    fams = sorted({p.family for p in loss_panels} | {p.family for p in acc_panels})
    loss = {p.family: p for p in loss_panels}
    acc = {p.family: p for p in acc_panels}
    colors = S.optimizer_colors(trials["optimizer"])
    # no val accuracy logged by any run (a user's module, a regression): the train loss alone
    ncols = 2 if acc_panels else 1
    fig, axes = S.grid_figure(len(fams), ncols, row_h=2.0, right=0.95, wgap=0.85, hgap=0.55)
    for row, fam in zip(axes, fams, strict=True):
        g = trials[trials["family"] == fam]
        norm = S.lr_norm(g["lr"])
        color = colors[g["optimizer"].iloc[0]]
        if fam in loss:
            draw_curves(loss[fam], row[0], norm, logy=True, fallback_color=color)
        row[0].set_ylabel("train loss" + (" (log)" if row[0].get_yscale() == "log" else ""))
        row[0].set_title(f"{fam} — train loss", color=color)
        if ncols == 2:
            row[1].sharex(row[0])
            if fam in acc:
                draw_curves(acc[fam], row[1], norm, fallback_color=color)
            row[1].set_ylabel(right_label)
            row[1].set_title(f"{fam} — {right_label.split(' (')[0]}", color=color)
        if g["lr"].notna().any():
            _lr_bar(fig, row[-1], norm)
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step")
    return fig


def grad_norm_figure(panels: list[CurvePanel], trials: pd.DataFrame) -> Figure:
    colors = S.optimizer_colors(trials["optimizer"])
    fig, axes = S.panel_grid(len(panels), row_h=2.2, right=0.95, wgap=1.5, hgap=0.75)
    for ax, p in zip(axes, panels, strict=True):
        g = trials[trials["family"] == p.family]
        norm = S.lr_norm(g["lr"])
        draw_curves(p, ax, norm, logy=True, fallback_color=colors[p.optimizer])
        ax.set_title(p.family, color=colors[p.optimizer])
        ax.set_ylabel("gradient L2 norm" + (" (log)" if ax.get_yscale() == "log" else ""))
        ax.set_xlabel("optimizer step")
        if g["lr"].notna().any():
            _lr_bar(fig, ax, norm)
    return fig


def schedules_data(
    trials: pd.DataFrame, history: pd.DataFrame, max_points: int = 500
) -> list[ScheduleLine]:
    """Per schedule label and optimizer: applied LR ÷ peak LR of one representative run (the
    median LR among non-diverged configurations, lowest seed)."""
    by_run = _by_run(history, N.LR)
    out = []
    for (sched, opt), g in trials.groupby(["schedule", "optimizer"], sort=True):
        g = g[g["run_id"].isin(by_run) & (g["lr"] > 0)]
        alive = g[~g["diverged"]] if (~g["diverged"]).any() else g
        if alive.empty:
            continue
        lrs = np.sort(alive["lr"].unique())
        pick = alive[alive["lr"] == lrs[len(lrs) // 2]].sort_values(["seed", "run_id"]).iloc[0]
        s, v = downsample(*by_run[pick["run_id"]], max_points)
        out.append(ScheduleLine(sched, opt, float(pick["lr"]), s, v / pick["lr"]))
    return out


def draw_schedules(data: list[ScheduleLine], axes, colors: dict[str, str]) -> None:
    scheds = sorted({d.schedule for d in data})
    for ax, sched in zip(axes, scheds, strict=False):
        lines = [d for d in data if d.schedule == sched]
        for i, d in enumerate(lines):
            # optimizers usually share a schedule's shape: widest line first, so all stay visible
            width = 1.4 + 2.4 * (len(lines) - 1 - i) / max(len(lines) - 1, 1)
            ax.plot(d.x, d.y, color=colors[d.optimizer], lw=width,
                    label=f"{d.optimizer} (peak {fmt_value(d.peak)})")  # fmt: skip
        _integer_steps(ax)
        ax.set_title(f"schedule: {sched}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("applied LR ÷ peak LR")
        ax.set_ylim(0, 1.4)  # headroom above 1 holds the legend, clear of every curve
        ax.legend(loc="upper right", ncol=2, frameon=False, fontsize=7)


def schedules_figure(data: list[ScheduleLine], trials: pd.DataFrame) -> Figure:
    n = max(1, len({d.schedule for d in data}))
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = S.grid_figure(nrows, ncols, row_h=2.3, hgap=0.75)
    axes = axes.ravel()
    draw_schedules(data, axes, S.optimizer_colors(trials["optimizer"]))
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig
