"""The gradient norm at too high an LR: larger, and fluctuating more, than at the best LR.

The two LRs are the 3 × 3 table's (`regimes.find_regimes`): appropriate = the crowned best, too
high = the nearest higher LR of its family that the diagnosis calls too high or diverged. Per run,
over the second half of its logged steps (a diverged run: of the steps it ran): the median
gradient norm, and its coefficient of variation (std / mean).
"""

from __future__ import annotations

import numpy as np

from lrstudy.report.analyze import fmt_value
from lrstudy.report.claims import decide as D
from lrstudy.report.claims.evidence import Claim, Evidence, Finding, Frames, inconclusive
from lrstudy.report.claims.measures import grad_norm_stats
from lrstudy.report.claims.regimes import find_regimes, regimes_table

FAMILY = "gradients"
LEVEL_MARGIN = 0.1  # log10: ×1.26, well beyond the seed-to-seed spread of a median norm
CV_MARGIN = 0.1  # ten points of coefficient of variation


def _compare(frames: Frames, col: str, label: str, margin: float, log: bool) -> Finding:
    regimes = find_regimes(frames)
    if regimes is None:
        return inconclusive("no configuration is crowned (every one has a diverged seed)")
    if regimes["too high"] is None:
        return inconclusive(
            f"the grid has no too-high LR above the best ({regimes['appropriate'].config})"
        )
    stats = grad_norm_stats(frames.trials, frames.history)
    if not np.isfinite(stats[col]).any():
        return inconclusive("no gradient norm (train/grad_norm) was logged")
    vals = {}
    for name in ("too high", "appropriate"):
        v = stats[col].reindex(regimes[name].runs["run_id"]).to_numpy(dtype=float)
        vals[name] = np.log10(np.where(v > 0, v, np.nan)) if log else v
    est, se, na, nb = D.difference(vals["too high"], vals["appropriate"])
    unit = "log10" if log else ""
    ev = tuple(
        D.values_evidence(f"{label}, {n} (lr={fmt_value(regimes[n].lr)})", vals[n], unit=unit)
        for n in ("too high", "appropriate")
    ) + (Evidence("difference (too high − appropriate)", est, se, f"{na} vs {nb}", kind="se",
                  unit=unit),)  # fmt: skip
    verdict = D.greater(est, se, margin)
    reason = f"{label}: too high − appropriate = {est:+.3f} ± {se:.3f} se (margin {margin:g})"
    return Finding(verdict, reason, ev, regimes_table(regimes))


def grows(frames: Frames) -> Finding:
    return _compare(frames, "gn_level", "median gradient norm", LEVEL_MARGIN, log=True)


def oscillates(frames: Frames) -> Finding:
    return _compare(frames, "gn_cv", "gradient-norm coefficient of variation", CV_MARGIN, log=False)


_PICK = ("LRs as in the 3 × 3 table (appropriate = the crowned best; too high = the nearest higher "
         "LR the diagnosis calls too high or diverged). Per run, over the second half of its "
         "logged steps, ")  # fmt: skip
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
