"""The central figure: final/best val accuracy and final train loss against the peak LR.

`sensitivity_data(configs, trials, range_tests) -> SensitivityData` (tested alone),
`draw_sensitivity(data, axes)`, `sensitivity_figure(data) -> Figure`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrstudy.report.baselines import BaselineBand, baseline_bands, baseline_mask
from lrstudy.report.best import best_config, frame_metric
from lrstudy.report.plots import style as S

SENSITIVITY_PANELS = [
    ("final_val_acc", "final val accuracy", False),
    ("best_val_acc", "best val accuracy", False),
    ("final_train_loss", "final train loss (log)", True),
]
YLABELS = {"final_val_acc": "accuracy (fraction)", "best_val_acc": "accuracy (fraction)",
           "final_train_loss": "loss"}  # fmt: skip


def _finite(trials: pd.DataFrame, col: str) -> bool:
    return col in trials.columns and bool(np.isfinite(trials[col].astype(float)).any())


def sensitivity_panels(trials: pd.DataFrame) -> list[tuple[str, str, bool]]:
    """(column, title, log y) per panel: the classic three for a study ranked by val accuracy;
    else the ranking metric first (titled with its name and direction), then whichever of best
    val accuracy and final train loss were logged. Panels without a single value are left out."""
    metric, _ = frame_metric(trials)
    if metric.is_val_acc:
        panels = list(SENSITIVITY_PANELS)
    else:
        logy = "loss" in metric.name.lower() or "perplex" in metric.name.lower()
        title = f"final {metric.name} ({metric.direction})" + (" (log)" if logy else "")
        panels = [("metric_value", title, logy), *SENSITIVITY_PANELS[1:]]
    kept = [p for p in panels if _finite(trials, p[0])]
    return kept or panels[:1]


@dataclass(frozen=True)
class SensitivityPanel:
    """One family's values of one metric. The line (mean, band lo..hi) covers the LRs none of
    whose seeds diverged; `dots` are all non-diverged seeds as (lr, value) rows."""

    lr: np.ndarray
    mean: np.ndarray  # seed mean per LR
    lo: np.ndarray  # seed min per LR
    hi: np.ndarray  # seed max per LR
    dots: np.ndarray  # shape (k, 2)


@dataclass(frozen=True)
class SensitivityFamily:
    label: str
    color: str
    linestyle: str
    marker: str
    panels: dict[str, SensitivityPanel]  # metric column -> panel
    diverged_lrs: list[float]  # one entry per diverged seed


@dataclass(frozen=True)
class Suggestion:
    """An LR range test's recommended LR, drawn as a dashed vertical line."""

    optimizer: str
    rule: str
    lr: float
    color: str


@dataclass(frozen=True)
class SensitivityData:
    families: list[SensitivityFamily]
    suggestions: list[Suggestion] = field(default_factory=list)
    best: tuple[float, float, str] | None = None  # (lr, mean final value, colour) of the best
    panels: list[tuple[str, str, bool]] = field(default_factory=lambda: list(SENSITIVITY_PANELS))
    # LR-free baselines at their defaults (no LR of their own): metric column -> bands, drawn
    # as horizontal bands across the LR axis; (band, colour) pairs
    baselines: dict[str, list[tuple[BaselineBand, str]]] = field(default_factory=dict)
    # trials successive halving stopped: (lr, the ranking metric at their rung, colour), drawn
    # hollow on the ranking metric's panel; never among the diverged
    stopped: list[tuple[float, float, str]] = field(default_factory=list)


def _panel(trials: pd.DataFrame, col: str) -> SensitivityPanel:
    # a configuration with a diverged seed gets no mean: its survivors' mean would look like a
    # healthy LR (and could out-rank the best configuration); its surviving seeds stay as dots
    clean = trials[~trials.groupby("config")["diverged"].transform("any")]
    values = clean.assign(_v=clean[col].where(np.isfinite(clean[col].astype(float))))
    stats = values.groupby("lr")["_v"].agg(["mean", "min", "max"]).dropna()
    ok = trials[~trials["diverged"]]
    return SensitivityPanel(
        lr=stats.index.to_numpy(float),
        mean=stats["mean"].to_numpy(float),
        lo=stats["min"].to_numpy(float),
        hi=stats["max"].to_numpy(float),
        dots=ok[["lr", col]].dropna().to_numpy(float).reshape(-1, 2),
    )


def sensitivity_data(
    configs: pd.DataFrame,
    trials: pd.DataFrame,
    range_tests: pd.DataFrame,
    stopped: pd.DataFrame | None = None,
) -> SensitivityData:
    """Per family and panel metric: LR, seed mean, min/max band, per-seed dots, diverged seeds;
    the range tests' recommended LRs; the best configuration (`best_config`); `stopped`: the
    Search section's rows of trials successive halving stopped (family, lr, value)."""
    style = S.family_style(configs)
    panels = sensitivity_panels(trials)
    colors = S.optimizer_colors(configs["optimizer"])
    is_base = baseline_mask(trials)
    bands = {
        col: [(b, colors.get(b.name, "#444")) for b in baseline_bands(trials, col)]
        for col, _, _ in panels
    }
    # the grid: baselines have no LR axis of their own; the star is the report's best
    # configuration (`best_config` over all trials), none when a baseline is it (its band shows it)
    best = best_config(trials)
    trials = trials[~is_base]
    families = []
    for fam in sorted(configs["family"].unique()):
        tr = trials[trials["family"] == fam]
        if tr.empty:  # a baseline's family
            continue
        families.append(
            SensitivityFamily(
                label=fam,
                **style[fam],
                panels={col: _panel(tr, col) for col, _, _ in panels},
                diverged_lrs=sorted(tr.loc[tr["diverged"], "lr"].dropna().tolist()),
            )
        )
    marks = [
        Suggestion(r.optimizer, r.rule, float(r.lr), colors.get(r.optimizer, "#444"))
        for r in range_tests.itertuples()
        if r.recommended and r.optimizer in colors
    ]
    mark = None
    if best is not None and best.name in set(trials["config"]):
        row = trials[trials["config"] == best.name].iloc[0]
        if np.isfinite(row["lr"]):
            mark = (float(row["lr"]), best.mean, style[row["family"]]["color"])
    if panels[0][0] not in ("final_val_acc", "metric_value"):
        mark = None  # the star marks the ranking metric's panel: there is none
    halted = []
    if stopped is not None and panels[0][0] in ("final_val_acc", "metric_value"):
        for r in stopped.itertuples():
            if np.isfinite(r.lr) and np.isfinite(r.value):
                color = style.get(r.family, {}).get("color", "#555555")
                halted.append((float(r.lr), float(r.value), color))
    return SensitivityData(families, marks, mark, panels, bands, halted)


def draw_sensitivity(data: SensitivityData, axes) -> None:
    for i, (ax, (col, label, logy)) in enumerate(zip(axes, data.panels, strict=True)):
        for fam in data.families:
            p = fam.panels[col]
            ax.plot(p.lr, p.mean, color=fam.color, ls=fam.linestyle, lw=1.6, marker=fam.marker,
                    ms=4, label=fam.label)  # fmt: skip
            ax.fill_between(p.lr, p.lo, p.hi, color=fam.color, alpha=0.15, lw=0)
            if len(p.dots):
                ax.scatter(p.dots[:, 0], p.dots[:, 1], s=9, color=fam.color, alpha=0.6, lw=0)
            if fam.diverged_lrs:  # pinned to the panel edge: worst end of the axis
                y = 0.97 if logy else 0.03
                ax.scatter(fam.diverged_lrs, [y] * len(fam.diverged_lrs), marker="x", s=30,
                           color=fam.color, transform=ax.get_xaxis_transform(), clip_on=False,
                           label=None)  # fmt: skip
        if i == 0 and data.stopped:
            lr, value, color = zip(*data.stopped, strict=True)
            ax.scatter(lr, value, s=16, facecolors="none", edgecolors=list(color), lw=0.9,
                       zorder=2)  # fmt: skip
        if i == 0 and data.best is not None:
            lr, mean, color = data.best
            ax.scatter([lr], [mean], marker="*", s=140, color=color, edgecolors="black",
                       linewidths=0.6, zorder=5)  # fmt: skip
        for band, color in data.baselines.get(col, []):
            ax.axhspan(band.lo, band.hi, color=color, alpha=0.12, lw=0)
            ax.axhline(band.mean, color=color, ls="-.", lw=1.3, label=f"{band.name} (defaults)")
        for s in data.suggestions:
            ax.axvline(s.lr, color=s.color, ls=(0, (2, 2)), lw=1.1, alpha=0.9)
        # diverged LRs may lie beyond the lines' range: the limits include them
        lrs = [v for fam in data.families for v in [*fam.panels[col].lr, *fam.diverged_lrs]]
        lrs += [v for fam in data.families for v in fam.panels[col].dots[:, 0]]
        lrs += [lr for lr, _, _ in data.stopped]  # every panel spans what the search tried
        S.log_axis(ax, "x", lrs, pad=1.6)
        if logy:
            vals = [v for fam in data.families for v in fam.panels[col].dots[:, 1]]
            if not S.log_axis(ax, "y", vals, min_ratio=S.LOG_MIN_RATIO):
                label = label.replace(" (log)", "")
        ax.set_xlabel("peak LR (log scale)")
        ax.set_title(label)


def sensitivity_figure(data: SensitivityData) -> Figure:
    n_bands = len(next(iter(data.baselines.values()), []))
    n_entries = (len(data.families) + n_bands + 1 + bool(data.suggestions)
                 + (data.best is not None) + bool(data.stopped))  # fmt: skip
    ncol = min(4, n_entries)
    fig, axes = S.grid_figure(
        1, len(data.panels), row_h=2.8, bottom=0.6 + S.legend_rows(n_entries, ncol), wgap=0.75
    )
    axes = axes[0]
    draw_sensitivity(data, axes)
    for ax, (col, title, _) in zip(axes, data.panels, strict=True):
        # the ranking metric's axis: its name as logged, and which way is better
        ax.set_ylabel(YLABELS.get(col) or title.replace(" (log)", ""))
    handles, labels = axes[0].get_legend_handles_labels()
    line = mpl.lines.Line2D
    extra = [line([], [], color="#444", marker="x", ls="none", label="diverged seed")]
    if data.best is not None:
        extra.append(line([], [], color="#888", marker="*", ms=10, mec="black", mew=0.6,
                          ls="none", label="best configuration"))  # fmt: skip
    if data.suggestions:
        extra.append(line([], [], color="#444", ls=(0, (2, 2)), label="find-lr suggestion"))
    if data.stopped:
        extra.append(line([], [], color="#444", marker="o", mfc="none", ls="none",
                          label="stopped by halving (value at its rung)"))  # fmt: skip
    fig.legend(handles + extra, labels + [h.get_label() for h in extra], loc="lower center",
               ncol=ncol, frameon=False)  # fmt: skip
    return fig
