"""Figures of an LR study: `*_data(frames) -> plain data` and `draw_*(data, ...)` on Figure axes.

Shared here: the colour rules, the deterministic SVG renderer, and the LR-axis figures
(sensitivity, stability, outcome grid). Curves over steps live in plots_curves.py, the other
swept axes and robustness in plots_axes.py. matplotlib.figure.Figure only, never pyplot.
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

from lrstudy.diagnose import OSC_MAX, SPREAD_MAX, VERDICT_TEXT

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]  # fmt: skip
LINESTYLES = ["-", "--", ":", "-."]
VERDICT_COLORS = {"too_low": "#6baed6", "good": "#31a354", "too_high": "#fd8d3c", "diverged": "#252525"}
LR_CMAP = mpl.colormaps["viridis"].resampled(256)  # sequential: dark = low LR, yellow = high LR
SVG_MAX_BYTES = 700_000  # above this a figure is embedded as PNG instead (page size budget)
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
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


def count_points(fig: Figure) -> int:
    """Data points drawn: line vertices plus scatter offsets (bands count as their outline)."""
    n = 0
    for ax in fig.axes:
        n += sum(len(line.get_xdata()) for line in ax.get_lines())
        for c in ax.collections:
            n += len(c.get_offsets()) if c.get_offsets() is not None else 0
    return n


def render(fig: Figure, name: str) -> dict:
    """Figure → {'name', 'kind', 'markup', 'bytes', 'points'}: inline SVG, or a PNG data URI when
    the SVG would be too big. Deterministic: a fixed hash salt (per figure, so ids of different
    figures on one page never collide) and no date metadata."""
    points = count_points(fig)
    with mpl.rc_context({**STYLE, "svg.hashsalt": f"lrstudy-{name}"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE: the markup is inlined
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    if len(svg) <= SVG_MAX_BYTES:
        return {"name": name, "kind": "svg", "markup": svg, "bytes": len(svg), "points": points}
    import base64

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
    uri = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    return {"name": name, "kind": "png", "markup": uri, "bytes": len(uri), "points": points}


def family_style(configs: pd.DataFrame) -> dict[str, dict]:
    """family → colour (by optimizer) and line style (by schedule)."""
    colors = optimizer_colors(configs["optimizer"])
    styles = schedule_styles(configs["schedule"])
    return {
        fam: {"color": colors[g["optimizer"].iloc[0]], "linestyle": styles[g["schedule"].iloc[0]]}
        for fam, g in configs.groupby("family", sort=True)
    }


# --- LR sensitivity --------------------------------------------------------------------------------

SENSITIVITY_PANELS = [
    ("final_val_acc", "final val accuracy", False),
    ("best_val_acc", "best val accuracy", False),
    ("final_train_loss", "final train loss (log)", True),
]


def sensitivity_data(configs: pd.DataFrame, trials: pd.DataFrame, range_tests: pd.DataFrame) -> dict:
    """Per family and panel metric: LR, seed mean, min/max band, per-seed dots, diverged seeds."""
    style = family_style(configs)
    families = []
    for fam, g in configs.groupby("family", sort=True):
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
        {"optimizer": r.optimizer, "rule": r.rule, "lr": float(r.lr), "color": colors.get(r.optimizer, "#444")}
        for r in range_tests.itertuples()
        if r.recommended and r.optimizer in colors
    ]
    return {"families": families, "suggestions": marks}


def draw_sensitivity(data: dict, axes) -> None:
    for ax, (col, label, logy) in zip(axes, SENSITIVITY_PANELS, strict=True):
        for fam in data["families"]:
            p = fam["panels"][col]
            ax.plot(p["lr"], p["mean"], color=fam["color"], ls=fam["linestyle"], lw=1.6,
                    marker="o", ms=3, label=fam["label"])  # fmt: skip
            ax.fill_between(p["lr"], p["lo"], p["hi"], color=fam["color"], alpha=0.15, lw=0)
            if len(p["dots"]):
                ax.scatter(p["dots"][:, 0], p["dots"][:, 1], s=9, color=fam["color"], alpha=0.6, lw=0)
            if fam["diverged_lrs"]:  # pinned to the panel edge: worst end of the axis
                y = 0.97 if logy else 0.03
                ax.scatter(fam["diverged_lrs"], [y] * len(fam["diverged_lrs"]), marker="x", s=30,
                           color=fam["color"], transform=ax.get_xaxis_transform(), clip_on=False,
                           label=None)  # fmt: skip
        for s in data["suggestions"]:
            ax.axvline(s["lr"], color=s["color"], ls=(0, (2, 2)), lw=1.1, alpha=0.9)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("peak LR (log scale)")
        ax.set_title(label)


def sensitivity_figure(data: dict) -> Figure:
    fig = Figure(figsize=(11, 3.9), layout="constrained")
    axes = fig.subplots(1, 3)
    draw_sensitivity(data, axes)
    axes[0].set_ylabel("accuracy (fraction)")
    axes[2].set_ylabel("loss (cross-entropy)")
    handles, labels = axes[0].get_legend_handles_labels()
    extra = [mpl.lines.Line2D([], [], color="#444", marker="x", ls="none", label="diverged seed")]
    if data["suggestions"]:
        extra.append(mpl.lines.Line2D([], [], color="#444", ls=(0, (2, 2)), label="find-lr suggestion"))
    fig.legend(handles + extra, labels + [h.get_label() for h in extra], loc="outside lower center",
               ncol=min(5, len(labels) + len(extra)), frameon=False)  # fmt: skip
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
            ax.plot(fam["lr"], fam[col], color=fam["color"], ls=fam["linestyle"], marker="o", ms=3,
                    lw=1.4, label=fam["label"])  # fmt: skip
        if threshold is not None:
            ax.axhline(threshold, color="#b22", lw=0.9, ls="--")
            ax.annotate("threshold", (0.01, threshold), xycoords=("axes fraction", "data"),
                        color="#b22", fontsize=7, va="bottom")  # fmt: skip
        ax.set_xscale("log")
        ax.set_title(label)
        ax.set_xlabel("peak LR (log scale)")


def stability_figure(data: dict) -> Figure:
    fig = Figure(figsize=(11, 6.2), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    draw_stability(data, axes)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(5, len(labels)), frameon=False)
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
    ax.set_xscale("log")
    ax.set_yticks(range(len(data["families"])), data["families"])
    ax.set_ylim(len(data["families"]) - 0.5, -0.5)
    ax.grid(False)
    ax.set_xlabel("peak LR (log scale); cell text = mean final val accuracy")


def outcome_figure(data: dict) -> Figure:
    fig = Figure(figsize=(11, 1.3 + 0.42 * len(data["families"])), layout="constrained")
    ax = fig.subplots()
    draw_outcomes(data, ax)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", frameon=False)
    return fig
