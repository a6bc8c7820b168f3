"""Metrics of one run's curves (train loss, val accuracy), as plain functions of arrays and of the
tidy history frame (run_id, key, step, value). No MLflow, no torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrstudy import names as N

# The oscillation index compares the loss's path length with its net drop, on bin means: a
# per-batch loss is noisy, and averaging ~8 points per bin keeps that noise out of the index.
POINTS_PER_BIN = 8
MAX_BINS = 30
# A run that barely moved is judged against a quarter of its starting loss: otherwise the batch
# noise on an almost flat curve (too low an LR) reads as oscillation.
DROP_FLOOR = 0.25
END_WINDOW = 0.2  # "still falling" looks at the last 20% of steps
EXPLODE_RATIO = 10.0  # a loss above 10x its starting level has exploded, whatever the tag says
# "Still falling" needs two things. The fall must be real: the least-squares slope over the last
# fifth at least 3 standard errors below zero (batch noise on a plateau never gets there). And it
# must still be progress: the last fifth made at least 5% of the run's whole drop. A relative
# change of the loss *level* (the rule before) missed a near-chance run whose loss falls slowly
# but steadily from 2.3, and called converged runs with a tiny loss "falling".
FALLING_T = 3.0
FALLING_SHARE = 0.05


def binned(steps: np.ndarray, values: np.ndarray, n_bins: int, hi: float | None = None):
    """Mean of the finite values in `n_bins` equal-width step bins → (bin centres, means); bins
    without a finite value are NaN. The one downsampling rule used for analysis and figures."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    hi = float(steps.max()) if hi is None and len(steps) else (hi or 0.0)
    edges = np.linspace(0.0, max(hi, 1.0), n_bins + 1)
    idx = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, n_bins - 1)
    ok = np.isfinite(values)
    sums = np.bincount(idx[ok], weights=values[ok], minlength=n_bins)
    counts = np.bincount(idx[ok], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return (edges[:-1] + edges[1:]) / 2, means


def downsample(steps: np.ndarray, values: np.ndarray, max_points: int):
    """≤ max_points per curve: as-is when short enough, else bin means (NaN bins dropped)."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    if len(steps) <= max_points:
        return steps, values
    x, y = binned(steps, values, max_points)
    keep = np.isfinite(y)
    return x[keep], y[keep]


def oscillation_index(steps: np.ndarray, loss: np.ndarray) -> float:
    """Path length of the bin-averaged loss over its net drop, minus 1: 0 for a monotone descent,
    large when the loss swings up and down. NaN with too few finite points."""
    finite = np.isfinite(loss)
    n_bins = min(MAX_BINS, int(finite.sum()) // POINTS_PER_BIN)
    if n_bins < 3:
        return float("nan")
    _, m = binned(steps[finite], loss[finite], n_bins)
    m = m[np.isfinite(m)]
    drop = max(m[0] - m[-1], DROP_FLOOR * abs(m[0]), 1e-12)
    return float(max(np.abs(np.diff(m)).sum() / drop - 1.0, 0.0))


def _tail(steps: np.ndarray, loss: np.ndarray):
    """Finite (steps, values) of the last END_WINDOW of steps, and the first 5% of values; None
    with too few points to fit a line."""
    finite = np.isfinite(loss)
    s, v = np.asarray(steps)[finite].astype(float), np.asarray(loss)[finite]
    if len(s) < 5:
        return None
    tail = s >= s.max() - END_WINDOW * (s.max() - s.min())
    if tail.sum() < 3:
        return None
    return s[tail], v[tail], v[: max(1, len(v) // 20)]


def end_trend(steps: np.ndarray, loss: np.ndarray) -> float:
    """Relative change of the loss over the last END_WINDOW of steps (least-squares line);
    negative = falling. NaN with too few points."""
    part = _tail(steps, loss)
    if part is None:
        return float("nan")
    s, v, _ = part
    slope = np.polyfit(s, v, 1)[0]
    return float(slope * (s.max() - s.min()) / max(abs(v.mean()), 1e-12))


def still_falling(steps: np.ndarray, loss: np.ndarray) -> bool:
    """True when the loss falls over the last END_WINDOW of steps by more than noise can explain
    (t ≤ -FALLING_T) and by at least FALLING_SHARE of the run's whole drop."""
    part = _tail(steps, loss)
    if part is None:
        return False
    s, v, head = part
    x = s - s.mean()
    sxx = float((x**2).sum())
    if len(s) < 4 or sxx <= 0:
        return False
    slope = float((x * (v - v.mean())).sum() / sxx)
    resid = v - v.mean() - slope * x
    se = float(np.sqrt((resid**2).sum() / (len(s) - 2) / sxx))
    tail_drop = -slope * (s.max() - s.min())
    whole_drop = float(head.mean()) - (v.mean() + slope * (s.max() - s.mean()))
    significant = slope < 0 and (se == 0 or slope / se <= -FALLING_T)
    return bool(significant and whole_drop > 0 and tail_drop >= FALLING_SHARE * whole_drop)


RUN_METRICS = ["osc_index", "end_trend", "still_falling", "exploded", "auc_train_loss", "n_steps"]


def run_curve_metrics(history: pd.DataFrame) -> pd.DataFrame:
    """Per run: oscillation index, end trend, still falling, explosion, AUCs (means over the
    training curve), last val accuracy."""
    rows = []
    loss = history[history["key"] == N.TRAIN_LOSS]
    acc = history[history["key"] == N.VAL_ACC].groupby("run_id")["value"]
    acc_auc = acc.apply(lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else np.nan)
    for rid, g in loss.groupby("run_id", sort=True):
        s, v = g["step"].to_numpy(), g["value"].to_numpy()
        finite = v[np.isfinite(v)]
        start = finite[: max(1, len(finite) // 20)].mean() if len(finite) else np.nan
        exploded = (~np.isfinite(v)).any() or (len(finite) and finite.max() > EXPLODE_RATIO * start)
        rows.append(
            {
                "run_id": rid,
                "osc_index": oscillation_index(s, v),
                "end_trend": end_trend(s, v),
                "still_falling": still_falling(s, v),
                "exploded": bool(exploded),
                "auc_train_loss": float(finite.mean()) if len(finite) else np.nan,
                "n_steps": int(s.max()) + 1,
            }
        )
    out = pd.DataFrame(rows, columns=["run_id", *RUN_METRICS]).set_index("run_id")
    out["auc_val_acc"] = acc_auc
    out["last_val_acc"] = acc.last()
    return out
