"""Generalization and robustness per LR: does a larger LR leave a smaller train–test gap and a
model more robust to input noise?

Compared only among the LRs that fit the training set (mean final train accuracy ≥ FIT_ACC, no
diverged seed) in the crowned best configuration's family: an LR that underfits has a small gap
for the wrong reason. Per seed, the least-squares slope against log10(LR): of the gap (train −
val accuracy), and of the share of the clean accuracy kept under the largest input noise σ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrstudy.report.analyze import fmt_value
from lrstudy.report.best import best_config
from lrstudy.report.claims import decide as D
from lrstudy.report.claims.evidence import Claim, Evidence, Finding, Frames, inconclusive
from lrstudy.report.claims.measures import slope

FAMILY = "generalization"
FIT_ACC = 0.95  # "fits the training set": at most 5% of the training samples misclassified
SLOPE_MARGIN = 0.01  # one point of accuracy (or of kept accuracy) per decade of LR


def fitting(frames: Frames) -> tuple[pd.DataFrame, pd.DataFrame] | str:
    """(configs, trials) of the LRs that fit, or why there are too few of them."""
    best = best_config(frames.trials)
    if best is None:
        return "no configuration is crowned (every one has a diverged seed)"
    configs = frames.configs
    family = configs.loc[configs["config"] == best.name, "family"].iloc[0]
    fam = configs[(configs["family"] == family)]
    fit = fam[(fam["n_diverged"] == 0) & (fam["final_train_acc"] >= FIT_ACC)]
    if fit["lr"].nunique() < 2:
        return (f"only {fit['lr'].nunique()} LR(s) of {family} fit the training set (mean final "
                f"train accuracy ≥ {FIT_ACC:g}); two are needed")  # fmt: skip
    return fit, frames.trials[frames.trials["config"].isin(fit["config"])]


def _slopes(trials: pd.DataFrame, col: str) -> list[float]:
    return [
        slope(np.log10(g["lr"].to_numpy(dtype=float)), g[col].to_numpy(dtype=float))
        for _, g in trials.groupby("seed", sort=True)
    ]


def _finding(
    frames: Frames, col: str, label: str, sign: float, values: pd.Series | None = None
) -> Finding:
    got = fitting(frames)
    if isinstance(got, str):
        return inconclusive(got)
    fit, trials = got
    if values is not None:
        trials = trials.assign(**{col: values.reindex(trials.index)})
    ev = [
        D.values_evidence(f"{label} at lr={fmt_value(lr)}", g[col])
        for lr, g in trials.groupby("lr", sort=True)
    ]
    slopes = sign * np.array(_slopes(trials, col), dtype=float)
    est, se, n = D.mean_se(slopes)
    word = "fall" if sign < 0 else "rise"
    ev.append(Evidence(f"{word} of the {label} per decade of LR", est, se, n, kind="se"))
    verdict = D.greater(est, se, SLOPE_MARGIN)
    lrs = ", ".join(fmt_value(x) for x in sorted(fit["lr"].unique()))
    return Finding(verdict, f"over the LRs that fit ({lrs}): {word} {est:+.3f} ± {se:.3f} se per decade",
                   tuple(ev))  # fmt: skip


def smaller_gap(frames: Frames) -> Finding:
    return _finding(frames, "gen_gap", "train − val accuracy gap", sign=-1.0)


def more_robust(frames: Frames) -> Finding:
    noise = sorted((c for c in frames.trials.columns if c.startswith("noise:")),
                   key=lambda c: float(c.split(":", 1)[1]))  # fmt: skip
    if not noise:
        return inconclusive("needs evaluate.noise (accuracy under input noise)")
    t = frames.trials
    kept = t[noise[-1]] / t["final_val_acc"].where(t["final_val_acc"] > 0)
    sigma = noise[-1].split(":", 1)[1]
    return _finding(frames, "_kept", f"share of accuracy kept at noise σ={sigma}", sign=1.0,
                    values=kept)  # fmt: skip


_FIT = (f"Among the LRs of the crowned best configuration's family that fit the training set "
        f"(mean final train accuracy ≥ {FIT_ACC:g}, no diverged seed; at least two), per seed the "
        "least-squares slope against log10(LR) of ")  # fmt: skip
CLAIMS = [
    Claim("larger_lr_smaller_gap", FAMILY,
          "A larger LR generalizes better: it leaves a smaller train–test gap.",
          _FIT + "the gap (final train − val accuracy), negated; mean ± standard error over "
          "seeds: " + D.greater_rule("the fall per decade", f"{SLOPE_MARGIN:g}"),
          "lr-sensitivity", smaller_gap),
    Claim("larger_lr_more_robust", FAMILY,
          "A larger LR gives a model more robust to input noise.",
          _FIT + "the share of the clean val accuracy kept under the largest input-noise σ "
          "evaluated; mean ± standard error over seeds: "
          + D.greater_rule("the rise per decade", f"{SLOPE_MARGIN:g}"), "robustness", more_robust),
]  # fmt: skip
