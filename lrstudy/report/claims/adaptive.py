"""Adaptive optimizers need less LR tuning than SGD: a wider band of good LRs.

The band of one seed is the contiguous range of LRs around its best that keep `BAND_SHARE` of its
best accuracy, in decades, with its edges interpolated between grid points (`good_band`). Its
width only means the same for two optimizers when their grids extend past both edges; a band that
touches the end of its grid is a lower bound, and the verdict says when that decides it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrstudy.report.claims import decide as D
from lrstudy.report.claims.evidence import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    Claim,
    Evidence,
    Finding,
    Frames,
    inconclusive,
)
from lrstudy.report.claims.measures import BAND_SHARE, good_band, seed_curves

FAMILY = "adaptive optimizers"
ADAPTIVE = ("adagrad", "adadelta", "rmsprop", "adam", "adamw", "nadam", "radam")
BASELINE = "sgd"
# A quarter of a decade (×1.8) is about one step of a 4-per-decade grid: a narrower difference is
# within what interpolating the band's edges between grid points can resolve.
BAND_MARGIN = 0.25


def bands(trials: pd.DataFrame) -> tuple[np.ndarray, int]:
    """(per-seed band widths in decades, seeds whose band touches the grid's end)."""
    widths, censored = [], 0
    for curve in seed_curves(trials).values():
        band = good_band(curve)
        if band is not None:
            widths.append(band.decades)
            censored += band.censored
    return np.array(widths, dtype=float), censored


def _family_of(trials: pd.DataFrame, optimizer: str) -> pd.DataFrame:
    """An optimizer's trials in one family: constant schedule when there is one, else the first."""
    t = trials[trials["optimizer"] == optimizer]
    if t.empty:
        return t
    fams = sorted(t["family"].unique(), key=lambda f: ("constant" not in f.split(" · "), f))
    return t[t["family"] == fams[0]]


def wider_band(frames: Frames) -> Finding:
    base = _family_of(frames.trials, BASELINE)
    if base.empty:
        return inconclusive(f"needs the baseline optimizer {BASELINE!r}")
    b, b_cens = bands(base)
    ev = [Evidence(f"good-LR band, {BASELINE} ({b_cens} seeds at the grid's end)",
                   *D.mean_sd(b), unit="decades", digits=2)]  # fmt: skip
    verdicts, lines = [], []
    for opt in ADAPTIVE:
        fam = _family_of(frames.trials, opt)
        if fam.empty:
            continue
        w, cens = bands(fam)
        est, se, na, nb = D.difference(w, b)
        v = D.greater(est, se, BAND_MARGIN)
        # a lower bound cannot show "narrower", and a censored baseline cannot show "wider"
        if (v == NOT_SUPPORTED and 2 * cens > len(w)) or (v == SUPPORTED and 2 * b_cens > len(b)):
            v = INCONCLUSIVE
        verdicts.append(v)
        ev.append(Evidence(f"good-LR band, {opt} ({cens} seeds at the grid's end)", *D.mean_sd(w),
                           unit="decades", digits=2))  # fmt: skip
        ev.append(Evidence(f"{opt} − {BASELINE}", est, se, f"{na} vs {nb}", kind="se",
                           unit="decades", digits=2))  # fmt: skip
        lines.append(f"{opt} {est:+.2f} ± {se:.2f} decades: {v.replace('_', ' ')}")
    if not verdicts:
        return inconclusive(f"needs at least one adaptive optimizer ({', '.join(ADAPTIVE)})")
    return Finding(D.majority(verdicts), "; ".join(lines), tuple(ev))


CLAIMS = [
    Claim("adaptive_wider_lr_band", FAMILY,
          "Adaptive optimizers (Adagrad, Adadelta, RMSprop, Adam) need less LR tuning than SGD: "
          "a wider band of good LRs.",
          f"Per seed, the band of good LRs = the contiguous LRs around the seed's best that keep "
          f"{BAND_SHARE:.0%} of its best final val accuracy (a diverged run counts as chance), "
          "edges interpolated in log LR; width in decades. For each adaptive optimizer, width "
          f"minus {BASELINE}'s: " + D.greater_rule("the difference", f"{BAND_MARGIN:g} decades")
          + " A verdict that a band at its grid's end (a lower bound) could flip is "
          "inconclusive. Then " + D.MAJORITY_RULE, "lr-sensitivity", wider_band),
]  # fmt: skip
