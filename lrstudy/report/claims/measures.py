"""Measurements several claim families share, as plain functions of the tidy frames.

Per run: how fast the train loss descends, and the level and fluctuation of the gradient norm.
Per seed: accuracy against the LR within one group of configurations, its peak LR and the band of
good LRs around the peak. Working per seed gives every derived number (a best LR, a band width,
a slope) n values and so a spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrstudy import names as N
from lrstudy.report.curve_metrics import binned
from lrstudy.report.diagnose import OSC_MAX, at_chance

# Convergence speed = the share of the planned steps a run needs to cover half of the drop in train
# loss that the reference (the best LR) achieves: a level every sensible LR passes early, so the
# measure times the descent rather than the end point. The loss is averaged in HALFWAY_BINS bins
# first, so one lucky batch does not count as arriving.
HALFWAY_BINS = 50
START_SHARE = 0.02  # the starting loss = the mean over the first 2% of the planned steps
# "Good LRs" keep at least this share of the seed's best accuracy: relative, so a band means the
# same on a task at 60% as on one at 95%; measured per seed, so the band has a spread.
BAND_SHARE = 0.9
# A gradient norm beyond this is a blow-up, not a measurement (its square overflows float64).
MAX_NORM = 1e100


def _loss_curves(history: pd.DataFrame, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    part = history[history["key"] == key]
    return {
        rid: (g["step"].to_numpy(dtype=float), g["value"].to_numpy(dtype=float))
        for rid, g in part.groupby("run_id", sort=False)
    }


def _planned(t: pd.Series, steps: np.ndarray) -> float:
    total = t.get("total_steps")
    if isinstance(total, float | int) and math.isfinite(total) and total > 0:
        return float(total)
    return float(steps.max() + 1) if len(steps) else math.nan


def start_loss(steps: np.ndarray, loss: np.ndarray, total: float) -> float:
    """Mean finite loss over the first START_SHARE of the planned steps (at least one point)."""
    ok = np.isfinite(loss)
    start = loss[ok & (steps < max(START_SHARE * total, 1))]
    if not len(start):
        start = loss[ok][:1]
    return float(start.mean()) if len(start) else math.nan


def halfway_share(trials: pd.DataFrame, history: pd.DataFrame, end_loss: float) -> pd.Series:
    """run_id → share of the planned steps after which the binned train loss first falls below
    halfway from the run's starting loss to `end_loss`; 1.0 when it never does (a lower bound:
    the run would have needed the whole budget or more)."""
    curves = _loss_curves(history, N.TRAIN_LOSS)
    out = {}
    for _, t in trials.iterrows():
        steps, loss = curves.get(t["run_id"], (np.array([]), np.array([])))
        total = _planned(t, steps)
        start = start_loss(steps, loss, total)
        if not (math.isfinite(start) and math.isfinite(end_loss)) or start <= end_loss:
            out[t["run_id"]] = math.nan
            continue
        centres, means = binned(steps, loss, HALFWAY_BINS, hi=total)
        below = np.nonzero(means <= (start + end_loss) / 2)[0]
        out[t["run_id"]] = float(centres[below[0]] / total) if len(below) else 1.0
    return pd.Series(out, dtype=float)


def grad_norm_stats(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """run_id → gn_level (median gradient norm over the second half of the run's logged steps)
    and gn_cv (their std / mean: how much the norm fluctuates), over finite values below
    MAX_NORM."""
    curves = _loss_curves(history, N.GRAD_NORM)
    rows = []
    for rid in trials["run_id"]:
        steps, gn = curves.get(rid, (np.array([]), np.array([])))
        ok = np.isfinite(gn) & (np.abs(gn) < MAX_NORM)
        late = ok & (steps >= (steps[ok].max() / 2 if ok.any() else 0))
        v = gn[late]
        level = float(np.median(v)) if len(v) else math.nan
        cv = float(v.std(ddof=1) / v.mean()) if len(v) > 2 and v.mean() > 0 else math.nan
        rows.append((rid, level, cv))
    return pd.DataFrame(rows, columns=["run_id", "gn_level", "gn_cv"]).set_index("run_id")


def chance(trials: pd.DataFrame) -> float:
    """1 / number of classes, or 0 when unknown."""
    if "num_classes" not in trials.columns:
        return 0.0
    c = pd.to_numeric(trials["num_classes"], errors="coerce").astype(float)
    c = c[np.isfinite(c) & (c >= 2)]
    return 1.0 / float(c.iloc[0]) if len(c) else 0.0


def scored_acc(trials: pd.DataFrame) -> pd.Series:
    """Final val accuracy, with a diverged or missing value counted as chance: a run that blew up
    ended with nothing learned, and leaving it out would flatter its LR."""
    acc = pd.to_numeric(trials["final_val_acc"], errors="coerce").astype(float)
    bad = trials["diverged"].astype(bool) | ~np.isfinite(acc)
    return acc.where(~bad, chance(trials))


def stable(row: pd.Series) -> bool:
    """A trial that trained stably: no divergence, oscillation index at most diagnose's OSC_MAX,
    and a final accuracy above the chance band."""
    if bool(row["diverged"]):
        return False
    osc = row.get("osc_index", math.nan)
    if osc is not None and math.isfinite(osc) and osc > OSC_MAX:
        return False
    return at_chance(row) is None


@dataclass(frozen=True)
class SeedCurve:
    """One seed's accuracy against the LR, LRs ascending."""

    lrs: np.ndarray
    accs: np.ndarray


def seed_curves(trials: pd.DataFrame) -> dict[int, SeedCurve]:
    """seed → accuracy (`scored_acc`) against the LR, over the given trials (one group)."""
    t = trials.assign(_acc=scored_acc(trials)).dropna(subset=["lr"])
    out = {}
    for seed, g in t.groupby("seed", sort=True):
        g = g.groupby("lr", sort=True)["_acc"].mean()
        out[int(seed)] = SeedCurve(g.index.to_numpy(dtype=float), g.to_numpy(dtype=float))
    return out


def peak_lr(curve: SeedCurve) -> tuple[float, bool]:
    """(best LR, at the grid's edge). The grid's argmax, refined by the vertex of the parabola
    through it and its two neighbours in log10 LR (kept between the neighbours), so a best LR can
    fall between grid points and per-seed values average meaningfully."""
    if len(curve.lrs) == 0 or not np.isfinite(curve.accs).any():
        return math.nan, False
    i = int(np.nanargmax(curve.accs))
    x = np.log10(curve.lrs)
    if i == 0 or i == len(x) - 1:
        return float(curve.lrs[i]), len(x) > 1
    (x0, x1, x2), (y0, y1, y2) = x[i - 1 : i + 2], curve.accs[i - 1 : i + 2]
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom if denom else 0.0
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom if denom else 0.0
    vertex = -b / (2 * a) if a < 0 else x1
    return float(10 ** min(max(vertex, x0), x2)), False


@dataclass(frozen=True)
class Band:
    """The LRs whose accuracy keeps BAND_SHARE of the seed's best, contiguous around the peak."""

    low: float
    high: float
    censored: bool  # the band reaches an end of the grid: its width is a lower bound

    @property
    def decades(self) -> float:
        return math.log10(self.high / self.low)


def _crossing(x_in: float, y_in: float, x_out: float, y_out: float, level: float) -> float:
    """Where the straight line between a good and a bad grid point crosses `level` (log LR)."""
    return x_in + (x_out - x_in) * (y_in - level) / (y_in - y_out) if y_in != y_out else x_in


def good_band(curve: SeedCurve) -> Band | None:
    """The band of good LRs of one seed; None without a finite accuracy."""
    if len(curve.lrs) == 0 or not np.isfinite(curve.accs).any():
        return None
    x, y = np.log10(curve.lrs), np.nan_to_num(curve.accs, nan=-np.inf)
    i = int(np.argmax(y))
    level = BAND_SHARE * y[i]
    lo = i
    while lo > 0 and y[lo - 1] >= level:
        lo -= 1
    hi = i
    while hi < len(x) - 1 and y[hi + 1] >= level:
        hi += 1
    left = _crossing(x[lo], y[lo], x[lo - 1], y[lo - 1], level) if lo > 0 else x[lo]
    right = _crossing(x[hi], y[hi], x[hi + 1], y[hi + 1], level) if hi < len(x) - 1 else x[hi]
    return Band(10**left, 10**right, censored=lo == 0 or hi == len(x) - 1)


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x over the finite pairs; NaN with fewer than two x values."""
    ok = np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[ok])) < 2:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def axis_peaks(trials: pd.DataFrame, axis: str) -> dict[float, dict[int, tuple[float, bool]]]:
    """axis value → seed → (peak LR, at the grid's edge), for trials of one optimizer and
    schedule that sweep `axis` and the LR."""
    out: dict[float, dict[int, tuple[float, bool]]] = {}
    for value, g in trials.dropna(subset=[axis]).groupby(axis, sort=True):
        out[float(value)] = {seed: peak_lr(c) for seed, c in seed_curves(g).items()}
    return out


def peak_slopes(peaks: dict[float, dict[int, tuple[float, bool]]], x_of) -> np.ndarray:
    """Per seed, the least-squares slope of log10(peak LR) on x_of(axis value)."""
    seeds = sorted(set.intersection(*(set(p) for p in peaks.values()))) if peaks else []
    xs = np.array([x_of(v) for v in peaks], dtype=float)
    return np.array(
        [slope(xs, np.log10([peaks[v][s][0] for v in peaks])) for s in seeds], dtype=float
    )


def groups(trials: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The trials per optimizer · schedule: what must match when another axis is compared."""
    key = trials["optimizer"].astype(str) + " · " + trials["schedule"].astype(str)
    return [(str(k), g) for k, g in trials.groupby(key, sort=True)]
