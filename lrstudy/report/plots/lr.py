"""Figures with the LR on the x axis besides the central sensitivity figure (plots.sensitivity):
stability and the outcome grid. `*_data(configs)` returns a typed dataclass, tested alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrstudy.report.diagnose import OSC_MAX, SPREAD_MAX, VERDICT_TEXT
from lrstudy.report.plots.style import (
    DARK_VERDICTS,
    VERDICT_COLORS,
    family_style,
    grid_figure,
    legend_rows,
    log_axis,
)

# --- stability -------------------------------------------------------------------------------------

STABILITY_PANELS = [
    ("divergence_rate", "divergence rate (share of seeds)", None),
    ("osc_index", "oscillation index (0 = monotone)", OSC_MAX),
    ("score_std", "seed-to-seed std of final accuracy", SPREAD_MAX),
    ("final_best_gap", "best − final val accuracy", None),
]


def stability_panels(configs: pd.DataFrame) -> list[tuple[str, str, float | None]]:
    """STABILITY_PANELS for the study's ranking metric: the seed-spread panel is about that
    metric (its threshold only for accuracy), and 'best − final val accuracy' only with one."""
    name = str(configs["metric"].iloc[0]) if "metric" in configs.columns and len(configs) else None
    if name is None or (name == "val/acc" and configs["metric_mode"].iloc[0] == "max"):
        return STABILITY_PANELS
    panels = [STABILITY_PANELS[0], STABILITY_PANELS[1],
              ("score_std", f"seed-to-seed std of final {name}", None)]  # fmt: skip
    if np.isfinite(configs["final_best_gap"].astype(float)).any():
        panels.append(STABILITY_PANELS[3])
    return panels


@dataclass(frozen=True)
class StabilityFamily:
    label: str
    color: str
    linestyle: str
    marker: str
    lr: np.ndarray
    values: dict[str, np.ndarray]  # STABILITY_PANELS column -> one value per LR


@dataclass(frozen=True)
class OutcomeCell:
    row: int  # index into OutcomeData.families
    family: str
    lr: float
    verdict: str
    text: str  # mean final val accuracy, '×' when diverged


@dataclass(frozen=True)
class OutcomeData:
    families: list[str]
    cells: list[OutcomeCell]
    label: str = "mean final val accuracy"  # what the cell text is


def stability_data(configs: pd.DataFrame) -> list[StabilityFamily]:
    """Per family, sorted by LR: each STABILITY_PANELS column. A configuration whose every seed
    diverged has no seed spread and no best-vs-final drop to speak of: NaN there."""
    style = family_style(configs)
    fams = []
    for fam, g in configs.groupby("family", sort=True):
        g = g.sort_values("lr")
        wiped = (g["n_diverged"] == g["n"]).to_numpy()
        values = {c: g[c].to_numpy(float) for c, _, _ in STABILITY_PANELS}
        for c in ("score_std", "final_best_gap"):
            values[c] = np.where(wiped, np.nan, values[c])
        fams.append(StabilityFamily(fam, **style[fam], lr=g["lr"].to_numpy(float), values=values))
    return fams


def draw_stability(data: list[StabilityFamily], axes, panels=None) -> None:
    for ax, (col, label, threshold) in zip(axes, panels or STABILITY_PANELS, strict=False):
        for fam in data:
            ax.plot(fam.lr, fam.values[col], color=fam.color, ls=fam.linestyle, marker=fam.marker,
                    ms=4, lw=1.4, label=fam.label)  # fmt: skip
        if threshold is not None:
            ax.axhline(threshold, color="#b22", lw=0.9, ls="--")
            ax.annotate("threshold", (0.01, threshold), xycoords=("axes fraction", "data"),
                        color="#b22", fontsize=7, va="bottom")  # fmt: skip
        if not any(np.isfinite(fam.values[col]).any() for fam in data):
            ax.text(0.5, 0.25, "no values: curves too short, or every seed diverged",
                    transform=ax.transAxes, ha="center", va="center", color="#666", fontsize=8)  # fmt: skip
        if col == "divergence_rate":  # a share of seeds: 0..1 (all 0 drew a ±0.04 axis)
            ax.set_ylim(-0.05, 1.05)
        log_axis(ax, "x", [v for fam in data for v in fam.lr], pad=1.6)
        ax.set_title(label)
        ax.set_xlabel("peak LR (log scale)")


def stability_figure(data: list[StabilityFamily], panels=None) -> Figure:
    n = len(data)
    ncol = min(4, n)
    panels = panels or STABILITY_PANELS
    fig, axes = grid_figure(2, 2, row_h=2.2, bottom=0.6 + legend_rows(n, ncol), hgap=0.8)
    axes = axes.ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    draw_stability(data, axes, panels)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
    return fig


# --- outcome grid (optimizer x LR "heatmap" of verdicts) ---------------------------------------------


def outcome_data(configs: pd.DataFrame) -> OutcomeData:
    """One cell per configuration: its family's row, LR, verdict and mean final val accuracy."""
    cells = []
    name = str(configs["metric"].iloc[0]) if "metric" in configs.columns and len(configs) else None
    other = name is not None and not (name == "val/acc" and configs["metric_mode"].iloc[0] == "max")
    for i, (fam, g) in enumerate(configs.groupby("family", sort=True)):
        for r in g.itertuples():
            if r.verdict == "diverged":
                text = "×"
            elif other:
                text = "—" if not np.isfinite(r.metric_value) else f"{r.metric_value:.2g}"
            else:
                text = f"{r.score:.2f}".lstrip("0")
            cells.append(OutcomeCell(i, fam, float(r.lr), r.verdict, text))
    label = f"mean final {name}" if other else "mean final val accuracy"
    return OutcomeData(sorted(configs["family"].unique()), cells, label)


def draw_outcomes(data: OutcomeData, ax) -> None:
    for v, color in VERDICT_COLORS.items():
        cells = [c for c in data.cells if c.verdict == v]
        ax.scatter([c.lr for c in cells], [c.row for c in cells], marker="s", s=330, color=color,
                   label=VERDICT_TEXT[v], edgecolors="white")  # fmt: skip
        for c in cells:
            ax.annotate(c.text, (c.lr, c.row), ha="center", va="center", fontsize=6.5,
                        color="white" if v in DARK_VERDICTS else "black")  # fmt: skip
    log_axis(ax, "x", [c.lr for c in data.cells], pad=1.6)
    ax.set_yticks(range(len(data.families)), data.families)
    ax.set_ylim(len(data.families) - 0.5, -0.5)
    ax.grid(False)
    ax.set_xlabel(f"peak LR (log scale); cell text = {data.label}")


def outcome_figure(data: OutcomeData) -> Figure:
    longest = max((len(f) for f in data.families), default=10)
    fig, axes = grid_figure(1, 1, row_h=max(1.1, 0.2 + 0.42 * len(data.families)), left=0.3 + 0.065 * longest,
                            right=1.3, top=0.15, bottom=0.6)  # fmt: skip
    ax = axes[0, 0]
    draw_outcomes(data, ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, markerscale=0.5)
    return fig
