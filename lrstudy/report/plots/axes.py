"""Figures for axes swept besides the LR (batch size, momentum, weight decay: LR x axis
heatmaps; train fraction: learning curves) and for robustness to input noise."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrstudy.report.analyze import family_label, fmt_value
from lrstudy.report.plots.style import (
    colorbar_beside,
    log_axis,
    lr_color,
    lr_norm,
    optimizer_colors,
    panel_grid,
)

AXIS_TEXT = {"batch_size": "batch size", "momentum": "momentum (β1)", "weight_decay": "weight decay",
             "train_fraction": "train fraction"}  # fmt: skip
HEAT_CMAP = mpl.colormaps["YlGn"].with_extremes(bad="#d9d9d9")  # grey = every seed diverged
NOISE_CMAP = mpl.colormaps["plasma"]


def _panels(configs: pd.DataFrame, axis: str, swept: list[str]):
    others = [a for a in swept if a != axis]
    label = configs.apply(lambda r: family_label(r, others), axis=1)
    return configs.assign(_panel=label).groupby("_panel", sort=True)


def _shown(configs: pd.DataFrame) -> tuple[str, str, str]:
    """(value column, std column, label) of what the axis figures show: final val accuracy, or
    the study's ranking metric as logged (its name and direction) when it ranks by another."""
    if "metric" in configs.columns and len(configs):
        name, mode = str(configs["metric"].iloc[0]), str(configs["metric_mode"].iloc[0])
        if (name, mode) != ("val/acc", "max"):
            better = "higher" if mode == "max" else "lower"
            return "metric_value", "metric_value_std", f"final {name} ({better} is better)"
    return "score", "score_std", "final val accuracy"


def axis_heatmap_data(configs: pd.DataFrame, axis: str, swept: list[str]) -> list[dict]:
    """Per panel (family without `axis`): mean final accuracy (or the study's ranking metric) on
    an axis-value x LR grid."""
    col, _, label = _shown(configs)
    out = []
    for panel, g in _panels(configs, axis, swept):
        ok = g.assign(_v=g[col].where(g["n_diverged"] == 0))
        grid = ok.pivot_table(index=axis, columns="lr", values="_v", aggfunc="mean", dropna=False)
        out.append({"panel": panel, "optimizer": g["optimizer"].iloc[0], "rows": list(grid.index),
                    "lrs": list(grid.columns), "values": grid.to_numpy(float),
                    "label": label, "accuracy": col == "score"})  # fmt: skip
    return out


def draw_axis_heatmap(panel: dict, ax, axis: str, vmin: float, vmax: float) -> mpl.image.AxesImage:
    v = panel["values"]
    im = ax.imshow(np.ma.masked_invalid(v), cmap=HEAT_CMAP, vmin=vmin, vmax=vmax, aspect="auto")
    for (i, j), val in np.ndenumerate(v):
        short = f"{val:.2f}".lstrip("0") if panel.get("accuracy", True) else f"{val:.2g}"
        text = "×" if not np.isfinite(val) else short
        dark = np.isfinite(val) and (val - vmin) / max(vmax - vmin, 1e-9) > 0.6
        ax.text(
            j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black"
        )
    ax.set_xticks(range(len(panel["lrs"])), [fmt_value(x) for x in panel["lrs"]], rotation=45)
    ax.set_yticks(range(len(panel["rows"])), [fmt_value(x) for x in panel["rows"]])
    ax.set_xlabel("peak LR (log-spaced grid)")
    ax.set_ylabel(AXIS_TEXT[axis])
    ax.grid(False)
    ax.set_title(panel["panel"])
    return im


def axis_heatmap_figure(panels: list[dict], axis: str, optimizers) -> Figure:
    colors = optimizer_colors(optimizers)
    vals = np.concatenate([p["values"].ravel() for p in panels])
    vals = vals[np.isfinite(vals)]
    vmin, vmax = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
    rows_per = max(len(p["rows"]) for p in panels)
    fig, axes = panel_grid(len(panels), row_h=0.3 + 0.32 * rows_per, right=1.0, bottom=0.95,
                           hgap=1.2, wgap=1.0)  # fmt: skip
    im = None
    for ax, p in zip(axes, panels, strict=True):
        im = draw_axis_heatmap(p, ax, axis, vmin, vmax)
        ax.title.set_color(colors[p["optimizer"]])
    if im is not None:  # beside the top-right panel
        label = panels[0].get("label", "final val accuracy")
        colorbar_beside(fig, axes[min(len(axes), 2) - 1], im, f"mean {label}")
    return fig


def learning_curve_data(configs: pd.DataFrame, swept: list[str]) -> list[dict]:
    """Per panel (family without train fraction): accuracy vs train fraction, one line per LR."""
    col, std, label = _shown(configs)
    out = []
    for panel, g in _panels(configs, "train_fraction", swept):
        lines = []
        for lr, gl in g.groupby("lr", sort=True):
            gl = gl[gl["n_diverged"] == 0].sort_values("train_fraction")
            lines.append({"lr": float(lr), "x": gl["train_fraction"].to_numpy(float),
                          "y": gl[col].to_numpy(float), "err": gl[std].fillna(0).to_numpy(float)})  # fmt: skip
        out.append({"panel": panel, "optimizer": g["optimizer"].iloc[0], "lines": lines,
                    "label": label})  # fmt: skip
    return out


def draw_learning_curves(panel: dict, ax) -> None:
    norm = lr_norm([ln["lr"] for ln in panel["lines"]])
    for ln in panel["lines"]:
        ax.errorbar(ln["x"], ln["y"], yerr=ln["err"], color=lr_color(norm, ln["lr"]), marker="o",
                    ms=3, lw=1.2, capsize=2, label=f"lr={fmt_value(ln['lr'])}" + ("" if len(ln["x"]) else " (diverged)"))  # fmt: skip
    ax.set_xlabel("train fraction (share of the training set)")
    ax.set_ylabel(panel.get("label", "final val accuracy"))
    ax.set_title(panel["panel"])


def learning_curve_figure(panels: list[dict]) -> Figure:
    fig, axes = panel_grid(len(panels), row_h=2.4, right=1.1, wgap=1.6, hgap=0.75)
    for ax, p in zip(axes, panels, strict=True):
        draw_learning_curves(p, ax)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=7)
    return fig


def robustness_data(configs: pd.DataFrame) -> list[dict]:
    """Per family: accuracy vs LR for clean inputs (σ = 0) and each logged noise level."""
    sigmas = sorted(
        (c for c in configs.columns if c.startswith("noise:")), key=lambda c: float(c[6:])
    )
    out = []
    for fam, g in configs.groupby("family", sort=True):
        g = g[g["n_diverged"] == 0].sort_values("lr")
        lines = [
            {"sigma": 0.0, "lr": g["lr"].to_numpy(float), "y": g["final_val_acc"].to_numpy(float)}
        ]
        lines += [
            {"sigma": float(c[6:]), "lr": g["lr"].to_numpy(float), "y": g[c].to_numpy(float)}
            for c in sigmas
        ]
        out.append(
            {"family": fam, "optimizer": g["optimizer"].iloc[0] if len(g) else "", "lines": lines}
        )
    return out


def draw_robustness(panel: dict, ax) -> None:
    top = max(ln["sigma"] for ln in panel["lines"]) or 1.0
    for ln in panel["lines"]:
        ax.plot(ln["lr"], ln["y"], marker="o", ms=3, lw=1.3, color=NOISE_CMAP(0.85 * ln["sigma"] / top),
                label=f"σ = {fmt_value(ln['sigma'])}")  # fmt: skip
    log_axis(ax, "x", [v for ln in panel["lines"] for v in ln["lr"]], pad=1.4)
    ax.set_xlabel("peak LR (log scale)")
    ax.set_ylabel("test accuracy under noise")
    ax.set_title(panel["family"])


def robustness_figure(panels: list[dict], optimizers) -> Figure:
    colors = optimizer_colors(optimizers)
    fig, axes = panel_grid(len(panels), row_h=2.3, hgap=0.75, bottom=0.6 + 0.55)
    for ax, p in zip(axes, panels, strict=True):
        draw_robustness(p, ax)
        ax.title.set_color(colors.get(p["optimizer"], "#000"))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False,
               title="Gaussian input noise (std, input units)")  # fmt: skip
    return fig
