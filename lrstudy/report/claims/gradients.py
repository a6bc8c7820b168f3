"""The gradient norm at too high an LR: larger, and fluctuating more, than at the best LR.

The two LRs are the 3 × 3 table's (`regimes.find_regimes`), cross-fitted: picked on one half of
the seeds (appropriate = that half's best, too high = the nearest higher LR of its family that
its diagnosis calls too high or diverged) and measured on the other half, both ways. Per run,
over the second half of its logged steps (a diverged run: of the steps it ran): the median
gradient norm, and its coefficient of variation (std / mean).
"""

from __future__ import annotations

import numpy as np

from lrstudy.report.analyze import fmt_value
from lrstudy.report.claims import decide as D
from lrstudy.report.claims.evidence import Claim, Evidence, Finding, Frames, inconclusive
from lrstudy.report.claims.measures import grad_norm_stats
from lrstudy.report.claims.regimes import MIN_SEEDS, find_regimes, regimes_table

FAMILY = "gradients"
LEVEL_MARGIN = 0.1  # log10: ×1.26, well beyond the seed-to-seed spread of a median norm
CV_MARGIN = 0.1  # ten points of coefficient of variation


def _compare(frames: Frames, col: str, label: str, margin: float, log: bool) -> Finding:
    fit = find_regimes(frames)
    if isinstance(fit, str):
        return inconclusive(fit)
    folds = fit.using("too high", "appropriate")
    if not folds:
        best = " / ".join(dict.fromkeys(fmt_value(float(f.picks["appropriate"]["lr"]))
                                        for f in fit.folds))  # fmt: skip
        return inconclusive(f"the grid has no too-high LR above the best (lr={best}, picked on "
                            "each half of the seeds)")  # fmt: skip
    stats = grad_norm_stats(frames.trials, frames.history)
    if not np.isfinite(stats[col]).any():
        return inconclusive("no gradient norm (train/grad_norm) was logged")
    vals, regimes = {}, {}
    for name in ("too high", "appropriate"):
        regimes[name] = fit.regime(name, folds)
        v = stats[col].reindex(regimes[name].runs["run_id"]).to_numpy(dtype=float)
        vals[name] = np.log10(np.where(v > 0, v, np.nan)) if log else v
    est, se, na, nb = D.difference(vals["too high"], vals["appropriate"])
    unit = "log10" if log else ""
    ev = tuple(
        D.values_evidence(f"{label}, {n} (lr={regimes[n].lr_text}; held-out seeds)", vals[n],
                          unit=unit)  # fmt: skip
        for n in ("too high", "appropriate")
    ) + (Evidence("difference (too high − appropriate)", est, se, f"{na} vs {nb}", kind="se",
                  unit=unit),)  # fmt: skip
    verdict = D.greater(est, se, margin)
    reason = (f"{label} on held-out seeds: too high − appropriate = {est:+.3f} ± {se:.3f} se "
              f"(margin {margin:g})")  # fmt: skip
    return Finding(verdict, reason, ev, regimes_table(fit))


def grows(frames: Frames) -> Finding:
    return _compare(frames, "gn_level", "median gradient norm", LEVEL_MARGIN, log=True)


def oscillates(frames: Frames) -> Finding:
    return _compare(frames, "gn_cv", "gradient-norm coefficient of variation", CV_MARGIN, log=False)


_PICK = ("LRs as in the 3 × 3 table, cross-fitted: each half of the seeds picks appropriate (its "
         "best configuration) and too high (the nearest higher LR its diagnosis calls too high or "
         "diverged), and the other half's seeds are measured at those LRs, both ways, pooled; not "
         f"decidable with fewer than {MIN_SEEDS} seeds per configuration. Per run, over the "
         "second half of its logged steps, ")  # fmt: skip
CLAIMS = [
    Claim("grad_norm_grows_at_high_lr", FAMILY, "At too high an LR the gradient norm grows.",
          _PICK + "the median gradient norm; log10 of it, too high − appropriate: "
          + D.greater_rule("the difference", f"{LEVEL_MARGIN:g} (×{10**LEVEL_MARGIN:.2f})"),
          "grad-norm", grows),
    Claim("grad_norm_oscillates_at_high_lr", FAMILY,
          "At too high an LR the gradient norm oscillates.",
          _PICK + "the coefficient of variation (std / mean) of the gradient norm, too high − "
          "appropriate: " + D.greater_rule("the difference", f"{CV_MARGIN:g}"), "grad-norm",
          oscillates),
]  # fmt: skip
