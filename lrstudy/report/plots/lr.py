"""Figures with the LR on the x axis: sensitivity (the central figure), stability, outcome grid."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrstudy.report.diagnose import OSC_MAX, SPREAD_MAX, VERDICT_TEXT
from lrstudy.report.plots.style import (
    LOG_MIN_RATIO,
    VERDICT_COLORS,
    family_style,
    grid_figure,
    legend_rows,
    log_axis,
    optimizer_colors,
)

# --- LR sensitivity --------------------------------------------------------------------------------

SENSITIVITY_PANELS = [
    ("final_val_acc", "final val accuracy", False),
    ("best_val_acc", "best val accuracy", False),
    ("final_train_loss", "final train loss (log)", True),
]


def sensitivity_data(
    configs: pd.DataFrame, trials: pd.DataFrame, range_tests: pd.DataFrame
) -> dict:
    """Per family and panel metric: LR, seed mean, min/max band, per-seed dots, diverged seeds."""
    style = family_style(configs)
    families = []
    for fam in sorted(configs["family"].unique()):
        tr = trials[trials["family"] == fam]
        ok = tr[~tr["diverged"]]
        entry = {"label": fam, **style[fam], "panels": {}}
        entry["diverged_lrs"] = sorted(tr.loc[tr["diverged"], "lr"].dropna().tolist())
        for col, _, _ in SENSITIVITY_PANELS:
            per = ok.groupby("lr")[col]
            stats = per.agg(["mean", "min", "max"]).dropna()
            stats = stats[np.isfinite(stats["mean"])]
            entry["panels"][col] = {
                "lr": stats.index.to_numpy(float),
                "mean": stats["mean"].to_numpy(float),
                "lo": stats["min"].to_numpy(float),
                "hi": stats["max"].to_numpy(float),
                "dots": ok[["lr", col]].dropna().to_numpy(float),
            }
        families.append(entry)
    colors = optimizer_colors(configs["optimizer"])
    marks = [
        {
            "optimizer": r.optimizer,
            "rule": r.rule,
            "lr": float(r.lr),
            "color": colors.get(r.optimizer, "#444"),
        }
        for r in range_tests.itertuples()
        if r.recommended and r.optimizer in colors
    ]
    return {"families": families, "suggestions": marks}


def draw_sensitivity(data: dict, axes) -> None:
    for ax, (col, label, logy) in zip(axes, SENSITIVITY_PANELS, strict=True):
        for fam in data["families"]:
            p = fam["panels"][col]
            ax.plot(p["lr"], p["mean"], color=fam["color"], ls=fam["linestyle"], lw=1.6,
                    marker=fam["marker"], ms=3.5, label=fam["label"])  # fmt: skip
            ax.fill_between(p["lr"], p["lo"], p["hi"], color=fam["color"], alpha=0.15, lw=0)
            if len(p["dots"]):
                ax.scatter(
                    p["dots"][:, 0], p["dots"][:, 1], s=9, color=fam["color"], alpha=0.6, lw=0
                )
            if fam["diverged_lrs"]:  # pinned to the panel edge: worst end of the axis
                y = 0.97 if logy else 0.03
                ax.scatter(fam["diverged_lrs"], [y] * len(fam["diverged_lrs"]), marker="x", s=30,
                           color=fam["color"], transform=ax.get_xaxis_transform(), clip_on=False,
                           label=None)  # fmt: skip
        for s in data["suggestions"]:
            ax.axvline(s["lr"], color=s["color"], ls=(0, (2, 2)), lw=1.1, alpha=0.9)
        # diverged LRs may lie beyond the lines' range: the limits include them
        lrs = [
            v for fam in data["families"] for v in [*fam["panels"][col]["lr"], *fam["diverged_lrs"]]
        ]
        log_axis(ax, "x", lrs, pad=1.6)
        if logy:
            vals = [v for fam in data["families"] for v in fam["panels"][col]["mean"]]
            if not log_axis(ax, "y", vals, min_ratio=LOG_MIN_RATIO):
                label = label.replace(" (log)", "")
        ax.set_xlabel("peak LR (log scale)")
        ax.set_title(label)


def sensitivity_figure(data: dict) -> Figure:
    n_entries = len(data["families"]) + 1 + bool(data["suggestions"])
    ncol = min(4, n_entries)
    fig, axes = grid_figure(1, 3, row_h=2.8, bottom=0.6 + legend_rows(n_entries, ncol), wgap=0.75)
    axes = axes[0]
    draw_sensitivity(data, axes)
    axes[0].set_ylabel("accuracy (fraction)")
    axes[1].set_ylabel("accuracy (fraction)")
    axes[2].set_ylabel("loss (cross-entropy)")
    handles, labels = axes[0].get_legend_handles_labels()
    extra = [mpl.lines.Line2D([], [], color="#444", marker="x", ls="none", label="diverged seed")]
    if data["suggestions"]:
        extra.append(
            mpl.lines.Line2D([], [], color="#444", ls=(0, (2, 2)), label="find-lr suggestion")
        )
    fig.legend(handles + extra, labels + [h.get_label() for h in extra], loc="lower center",
               ncol=ncol, frameon=False)  # fmt: skip
    return fig


# --- stability -------------------------------------------------------------------------------------

STABILITY_PANELS = [
    ("divergence_rate", "divergence rate (share of seeds)", None),
    ("osc_index", "oscillation index (0 = monotone)", OSC_MAX),
    ("score_std", "seed-to-seed std of final accuracy", SPREAD_MAX),
    ("final_best_gap", "best − final val accuracy", None),
]


def stability_data(configs: pd.DataFrame) -> dict:
    style = family_style(configs)
    fams = []
    for fam, g in configs.groupby("family", sort=True):
        g = g.sort_values("lr")
        fams.append({"label": fam, **style[fam], "lr": g["lr"].to_numpy(float),
                     **{c: g[c].to_numpy(float) for c, _, _ in STABILITY_PANELS}})  # fmt: skip
    return {"families": fams}


def draw_stability(data: dict, axes) -> None:
    for ax, (col, label, threshold) in zip(axes, STABILITY_PANELS, strict=True):
        for fam in data["families"]:
            ax.plot(fam["lr"], fam[col], color=fam["color"], ls=fam["linestyle"], marker=fam["marker"],
                    ms=3.5, lw=1.4, label=fam["label"])  # fmt: skip
        if threshold is not None:
            ax.axhline(threshold, color="#b22", lw=0.9, ls="--")
            ax.annotate("threshold", (0.01, threshold), xycoords=("axes fraction", "data"),
                        color="#b22", fontsize=7, va="bottom")  # fmt: skip
        log_axis(ax, "x", [v for fam in data["families"] for v in fam["lr"]], pad=1.6)
        ax.set_title(label)
        ax.set_xlabel("peak LR (log scale)")


def stability_figure(data: dict) -> Figure:
    n = len(data["families"])
    ncol = min(4, n)
    fig, axes = grid_figure(2, 2, row_h=2.2, bottom=0.6 + legend_rows(n, ncol), hgap=0.8)
    axes = axes.ravel()
    draw_stability(data, axes)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
    return fig


# --- outcome grid (optimizer x LR "heatmap" of verdicts) ---------------------------------------------


def outcome_data(configs: pd.DataFrame) -> dict:
    rows = []
    for i, (fam, g) in enumerate(configs.groupby("family", sort=True)):
        for r in g.itertuples():
            rows.append({"row": i, "family": fam, "lr": r.lr, "verdict": r.verdict,
                         "text": "×" if r.verdict == "diverged" else f"{r.score:.2f}".lstrip("0")})  # fmt: skip
    return {"families": sorted(configs["family"].unique()), "cells": rows}


def draw_outcomes(data: dict, ax) -> None:
    for v, color in VERDICT_COLORS.items():
        cells = [c for c in data["cells"] if c["verdict"] == v]
        ax.scatter([c["lr"] for c in cells], [c["row"] for c in cells], marker="s", s=330, color=color,
                   label=VERDICT_TEXT[v], edgecolors="white")  # fmt: skip
        for c in cells:
            ax.annotate(c["text"], (c["lr"], c["row"]), ha="center", va="center", fontsize=6.5,
                        color="white" if v in ("diverged", "good") else "black")  # fmt: skip
    log_axis(ax, "x", [c["lr"] for c in data["cells"]], pad=1.6)
    ax.set_yticks(range(len(data["families"])), data["families"])
    ax.set_ylim(len(data["families"]) - 0.5, -0.5)
    ax.grid(False)
    ax.set_xlabel("peak LR (log scale); cell text = mean final val accuracy")


def outcome_figure(data: dict) -> Figure:
    longest = max((len(f) for f in data["families"]), default=10)
    fig, axes = grid_figure(1, 1, row_h=0.2 + 0.42 * len(data["families"]), left=0.3 + 0.065 * longest,
                            right=1.3, top=0.15, bottom=0.6)  # fmt: skip
    ax = axes[0, 0]
    draw_outcomes(data, ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, markerscale=0.5)
    return fig
