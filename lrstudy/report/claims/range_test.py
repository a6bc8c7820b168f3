"""The LR range test's recommendation against the grid's best LR of the same optimizer.

The grid's best LR is the report's: the best configuration of that optimizer (highest seed-mean
final accuracy among those without a diverged seed, `diagnose.family_bests`). The per-seed best
LRs show how precisely the grid pins it down.
"""

from __future__ import annotations

import math

from lrstudy.report.analyze import fmt_value
from lrstudy.report.best import pick_best
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
from lrstudy.report.claims.measures import peak_lr, seed_curves

FACTOR = 3.0  # "near": within 3× either way, about one step of a 2-per-decade grid


def near_grid_best(frames: Frames) -> Finding:
    rt = frames.range_tests
    rec = rt[rt["recommended"].astype(bool)] if len(rt) else rt
    if rec.empty:
        return inconclusive("no LR range test with a recommendation was logged for this study")
    configs = frames.configs
    verdicts, ev, lines = [], [], []
    for _, r in rec.iterrows():
        mine = configs[(configs["optimizer"] == r["optimizer"]) & (configs["n_diverged"] == 0)]
        name = pick_best(mine.set_index("config")["score"]) if len(mine) else None
        if name is None:
            lines.append(f"{r['optimizer']}: no grid LR without a diverged seed")
            verdicts.append(INCONCLUSIVE)
            continue
        best = mine[mine["config"] == name].iloc[0]
        fam = frames.trials[frames.trials["family"] == best["family"]]
        peaks = [peak_lr(c)[0] for c in seed_curves(fam).values()]
        ratio = float(r["lr"]) / float(best["lr"])
        grid = fam["lr"].dropna()
        beyond = (r["lr"] > grid.max() and best["lr"] == grid.max()) or (
            r["lr"] < grid.min() and best["lr"] == grid.min()
        )
        ev.append(
            Evidence(
                f"{r['optimizer']}: range test ({r['rule']})", float(r["lr"]), math.nan, 1, digits=4
            )
        )
        ev.append(Evidence(f"{r['optimizer']}: grid's best LR ({best['family']})", float(best["lr"]),
                           math.nan, int(best["n"]), digits=4))  # fmt: skip
        ev.append(D.geo_evidence(f"{r['optimizer']}: per-seed best LR of the grid", peaks))
        ev.append(
            Evidence(
                f"{r['optimizer']}: range test / grid's best",
                ratio,
                math.nan,
                1,
                unit="×",
                digits=2,
            )
        )
        if abs(math.log10(ratio)) <= math.log10(FACTOR):
            verdicts.append(SUPPORTED)
        elif beyond:
            verdicts.append(INCONCLUSIVE)
        else:
            verdicts.append(NOT_SUPPORTED)
        lines.append(
            f"{r['optimizer']}: {fmt_value(r['lr'])} vs {fmt_value(best['lr'])} ({ratio:.2g}×)"
        )
    return Finding(D.every(verdicts), "; ".join(lines), tuple(ev))


CLAIMS = [
    Claim("range_test_near_grid_best", "range test",
          f"The LR range test's recommendation lands near the best LR of a grid (within {FACTOR:g}×).",
          "For each optimizer with a range test: its recommended LR against the grid's best LR "
          "of that optimizer (the best configuration without a diverged seed). Supported when "
          f"within {FACTOR:g}× either way; not supported when further; inconclusive when the grid's "
          "best sits at the grid's end and the recommendation lies beyond it. Then "
          + D.EVERY_RULE, "lr-sensitivity", near_grid_best),
]  # fmt: skip
