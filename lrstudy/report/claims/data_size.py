"""Learning curves against the training-set size, per LR.

Per LR and seed, the least-squares slope of the final val accuracy against log2(train fraction):
the accuracy gained per doubling of the data. An LR is judged only if it trains at the full
fraction (no diverged seed, above the chance band): at an LR that learns nothing, more data
cannot show.
"""

from __future__ import annotations

import numpy as np

from lrstudy.report.analyze import fmt_value
from lrstudy.report.claims import decide as D
from lrstudy.report.claims.evidence import Claim, Evidence, Finding, Frames, inconclusive
from lrstudy.report.claims.measures import groups, scored_acc, slope
from lrstudy.report.diagnose import at_chance


def learning_curves(frames: Frames) -> Finding:
    t = frames.trials.assign(_acc=scored_acc(frames.trials))
    verdicts, ev, lines = [], [], []
    for name, g in groups(t.dropna(subset=["train_fraction", "lr"])):
        if g["train_fraction"].nunique() < 2:
            continue
        full = g["train_fraction"].max()
        for lr, at_lr in g.groupby("lr", sort=True):
            top = frames.configs[
                frames.configs["config"].isin(at_lr.loc[at_lr["train_fraction"] == full, "config"])
            ]
            if top.empty or top["n_diverged"].sum() or any(at_chance(r) for _, r in top.iterrows()):
                continue
            slopes = [
                slope(
                    np.log2(s["train_fraction"].to_numpy(dtype=float)),
                    s["_acc"].to_numpy(dtype=float),
                )
                for _, s in at_lr.groupby("seed", sort=True)
            ]
            est, se, n = D.mean_se(slopes)
            verdicts.append(D.greater(est, se, D.ACC_MARGIN))
            ev.append(Evidence(f"{name}, lr={fmt_value(lr)}: accuracy gained per doubling of the data",
                               est, se, n, kind="se"))  # fmt: skip
            lines.append(f"lr={fmt_value(lr)} {verdicts[-1].replace('_', ' ')}")
    if not verdicts:
        return inconclusive(
            "needs sweep.train_fraction with at least two values and an LR that trains"
        )
    won = sum(v == "supported" for v in verdicts)
    return Finding(D.every(verdicts), f"{won}/{len(verdicts)} LRs rise clearly ({', '.join(lines)})",
                   tuple(ev))  # fmt: skip


CLAIMS = [
    Claim("learning_curves_rise", "training-set size",
          "More training data raises the final accuracy, at every LR that trains.",
          "Per LR that trains at the full training set (no diverged seed, mean accuracy above the "
          "chance band) and per seed, the least-squares slope of the final val accuracy (a "
          "diverged seed counts as chance) against log2(train fraction); mean ± standard error "
          "over seeds: " + D.greater_rule("the slope", f"{D.ACC_MARGIN:g} per doubling") + " Then "
          + D.EVERY_RULE, "learning-curves", learning_curves),
]  # fmt: skip
