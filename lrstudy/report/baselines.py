"""LR-free baselines in a report: which trials are baselines, their bands, and what tuning gains.

A baseline is an LR-free optimizer (Prodigy, D-Adaptation, schedule-free; the `lrfree` extra) run
only at its defaults: its package's lr and a constant schedule, as `baselines:` in a study plans
it. An LR-free optimizer whose lr was swept is a family like any other, on an LR axis that is a
multiplier (the notes say so). Torch-free: the catalogue entries are plain data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrstudy.report.best import best_config, frame_metric
from lrstudy.spec.optimizers import LR_FREE


def _at_defaults(trials: pd.DataFrame) -> pd.Series:
    lr = trials["lr"].astype(float)
    default = trials["optimizer"].map(lambda o: LR_FREE[o].default_lr if o in LR_FREE else np.nan)
    sched = trials.get("schedule", pd.Series("constant", index=trials.index)).astype(str)
    return np.isclose(lr, default.astype(float)) & sched.isin(["constant", "—"])


def baseline_mask(trials: pd.DataFrame) -> pd.Series:
    """True for the trials of baselines: LR-free optimizers whose every trial is at defaults."""
    if not len(trials) or "optimizer" not in trials.columns:
        return pd.Series(False, index=trials.index)
    lr_free = trials["optimizer"].isin(list(LR_FREE))
    at_defaults = _at_defaults(trials) & lr_free
    only_defaults = at_defaults.groupby(trials["optimizer"]).transform("all")
    return lr_free & only_defaults


@dataclass(frozen=True)
class BaselineBand:
    """One baseline's final values of one metric over its seeds (diverged seeds left out)."""

    name: str
    mean: float
    lo: float  # seed min
    hi: float  # seed max
    std: float  # sample std (nan for one seed)
    n: int  # seeds with a value
    diverged: int  # seeds that diverged


def baseline_bands(trials: pd.DataFrame, col: str) -> list[BaselineBand]:
    """Per baseline, in name order: mean, min..max and std of `col` over its seeds."""
    base = trials[baseline_mask(trials)]
    out = []
    for name, rows in base.groupby("optimizer", sort=True):
        ok = rows[~rows["diverged"].astype(bool)] if "diverged" in rows else rows
        v = ok[col].astype(float) if col in ok else pd.Series(dtype=float)
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        out.append(
            BaselineBand(
                str(name),
                float(v.mean()),
                float(v.min()),
                float(v.max()),
                float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                int(len(v)),
                int(len(rows) - len(ok)),
            )
        )
    return out


@dataclass(frozen=True)
class Gain:
    """How far the tuned best lies ahead of one baseline (in points for an accuracy)."""

    baseline: str
    tuned: str  # the tuned best configuration
    gain: float  # tuned mean - baseline mean, in the direction of better (points if accuracy)
    se: float  # standard error of that difference (Welch), same units
    n_tuned: int
    n_baseline: int
    unit: str  # "points" or the metric's name

    def text(self) -> str:
        se = f" ± {self.se:.1f}" if math.isfinite(self.se) else ""
        fmt = ".1f" if self.unit == "points" else ".3g"
        return (
            f"tuning gains {self.gain:+{fmt}}{se} (se) {self.unit} over {self.baseline} at its "
            f"defaults (tuned best: {self.tuned}, n={self.n_tuned}; {self.baseline}, "
            f"n={self.n_baseline})"
        )


def tuning_gains(trials: pd.DataFrame) -> list[Gain]:
    """Per baseline: the tuned best (best configuration among the non-baseline ones, by the
    study's ranking metric) minus the baseline, with Welch's standard error and each n."""
    mask = baseline_mask(trials)
    if not mask.any() or mask.all():
        return []
    tuned = trials[~mask]
    best = best_config(tuned)
    if best is None:
        return []
    metric, col = frame_metric(trials)
    scale, unit = (100.0, "points") if metric.is_val_acc else (1.0, metric.name)
    sign = metric.sign
    t = tuned.loc[tuned["config"] == best.name, col].astype(float)
    t = t[np.isfinite(t)]
    out = []
    for band in baseline_bands(trials, col):
        se = math.sqrt(
            (t.var(ddof=1) / len(t) if len(t) > 1 else math.nan)
            + (band.std**2 / band.n if band.n > 1 else math.nan)
        )
        out.append(
            Gain(
                band.name,
                str(best.name),
                sign * (float(t.mean()) - band.mean) * scale,
                se * scale,
                int(len(t)),
                band.n,
                unit,
            )
        )
    return out


def lr_free_notes(trials: pd.DataFrame) -> list[str]:
    """The report's notes on LR-free optimizers: a swept lr is a multiplier; baselines' bands."""
    if "optimizer" not in trials.columns:
        return []
    mask = baseline_mask(trials)
    out = []
    swept = sorted(set(trials.loc[~mask & trials["optimizer"].isin(list(LR_FREE)), "optimizer"]))
    adaptive = [o for o in swept if LR_FREE[o].lr_free == "adaptive"]
    if adaptive:
        out.append(
            f"{', '.join(adaptive)}: the LR axis is a multiplier of the step size the optimizer "
            "estimates itself; its logged lr metric is the step size applied (d·lr)."
        )
    if set(swept) - set(adaptive):
        out.append(
            f"{', '.join(sorted(set(swept) - set(adaptive)))}: a schedule-free optimizer's lr; it "
            "is validated on its averaged weights."
        )
    if mask.any():
        names = ", ".join(sorted(set(trials.loc[mask, "optimizer"])))
        out.append(
            f"Baselines ({names}) ran at their packages' defaults, with no LR tuned: the LR "
            "sensitivity figure draws each as a horizontal band (seed mean, min–max)."
        )
    return out
