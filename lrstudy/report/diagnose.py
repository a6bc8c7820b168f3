"""Verdicts per configuration: too low / good / too high / diverged.

A family is every configuration that shares optimizer, schedule and the other swept axes; within
a family the LRs are compared with the family's best LR. The same rules are printed in the
report (`rules_text`), so the page and the code cannot disagree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrstudy.report.analyze import EXPLODE_RATIO, FALLING_REL, fmt_value

# "Clearly worse" needs a gap that matters in practice (2 points of accuracy) AND one that seed
# noise cannot explain (twice the best configuration's seed std); the larger of the two applies.
CLEAR_MARGIN = 0.02
CLEAR_STDS = 2.0
# Oscillation index 1 = the smoothed loss travelled twice its net drop: a converging run with
# plateau noise stays well below (~0.1-0.3 on the reference tasks), LR-driven swings go above.
OSC_MAX = 1.0
# Seed-to-seed std of the final score above 5 points of accuracy: the outcome depends more on the
# seed than on the LR, the typical symptom of an LR at the edge of stability (good LRs: ~0.5-1.5).
SPREAD_MAX = 0.05

VERDICTS = ("too_low", "good", "too_high", "diverged")  # tag values of lrstudy.diagnosis
VERDICT_TEXT = {
    "too_low": "too low",
    "good": "good",
    "too_high": "too high",
    "diverged": "diverged",
}


def rules_text() -> list[str]:
    """The verdict rules, with the thresholds this module uses, for the report page."""
    return [
        "Configurations are compared within a family (same optimizer, schedule and other swept "
        "settings); seeds are aggregated (mean, sample std).",
        f"diverged — any seed diverged: outcome tag 'diverged', a non-finite loss, or a loss above "
        f"{EXPLODE_RATIO:g}× its starting level.",
        "best LR of a family — the highest mean final validation accuracy among its non-diverged LRs.",
        f"clearly worse — mean final accuracy below the best by more than max({CLEAR_MARGIN:g}, "
        f"{CLEAR_STDS:g} × the best LR's seed std).",
        f"unstable — oscillation index above {OSC_MAX:g} (path length of the bin-averaged train "
        f"loss over its net drop, minus 1; 0 = monotone descent) or seed std of the final accuracy "
        f"above {SPREAD_MAX:g}.",
        "too high — LR ≥ the best LR and unstable, or LR above the best LR and clearly worse.",
        f"too low — LR below the best LR and clearly worse; 'still falling' notes a train loss "
        f"that dropped by more than {-FALLING_REL:.0%} over the last fifth of training (more "
        f"steps might close the gap).",
        "good — everything else: within noise of the best, stable.",
    ]


def diagnose(configs: pd.DataFrame) -> pd.DataFrame:
    """Add verdict, reason, best_lr, best_score, clearly_worse, unstable to a config table."""
    alive = configs[(configs["n_diverged"] == 0) & np.isfinite(configs["score"])]
    best_idx = alive.groupby("family")["score"].idxmax()
    cols: dict[str, list] = {
        k: [] for k in ("verdict", "reason", "clearly_worse", "unstable", "best_lr", "best_score")
    }
    for _, row in configs.iterrows():
        best = configs.loc[best_idx[row["family"]]] if row["family"] in best_idx else None
        verdict, reason, worse, unstable = _verdict(row, best)
        for k, v in zip(
            ("verdict", "reason", "clearly_worse", "unstable"),
            (verdict, reason, worse, unstable),
            strict=True,
        ):
            cols[k].append(v)
        cols["best_lr"].append(np.nan if best is None else best["lr"])
        cols["best_score"].append(np.nan if best is None else best["score"])
    return configs.assign(**cols)


def _verdict(row: pd.Series, best: pd.Series | None) -> tuple[str, str, bool, bool]:
    if row["n_diverged"] > 0:
        at = row.get("first_diverged_at")
        where = f", first at step {int(at)}" if at is not None and np.isfinite(at) else ""
        return "diverged", f"diverged in {row['n_diverged']}/{row['n']} seeds{where}", False, False
    if best is None or not np.isfinite(row["score"]):
        return "good", "no non-diverged configuration to compare with", False, False
    best_std = best["score_std"] if np.isfinite(best["score_std"]) else 0.0
    margin = max(CLEAR_MARGIN, CLEAR_STDS * best_std)
    gap = best["score"] - row["score"]
    worse = bool(gap > margin)
    osc, spread = row["osc_index"], row["score_std"]
    why_unstable = []
    if np.isfinite(osc) and osc > OSC_MAX:
        why_unstable.append(f"oscillation index {osc:.2f} > {OSC_MAX:g}")
    if np.isfinite(spread) and spread > SPREAD_MAX:
        why_unstable.append(f"seed std {spread:.3f} > {SPREAD_MAX:g}")
    unstable = bool(why_unstable)
    lr, best_lr = row["lr"], best["lr"]
    versus = f"{gap:.3f} below the best ({best['score']:.3f} at lr={fmt_value(best_lr)}; margin {margin:.3f})"
    higher = bool(np.isfinite(lr) and np.isfinite(best_lr) and lr > best_lr)
    lower = bool(np.isfinite(lr) and np.isfinite(best_lr) and lr < best_lr)
    if unstable and not lower:
        return "too_high", "unstable: " + "; ".join(why_unstable), worse, unstable
    if worse and higher:
        return "too_high", versus, worse, unstable
    if worse and lower:
        falling = "; loss still falling at the end" if row.get("still_falling") else ""
        return "too_low", versus + falling, worse, unstable
    if row["config"] == best["config"]:
        return "good", "best LR of its family", worse, unstable
    note = "; unstable: " + "; ".join(why_unstable) if unstable else ""
    return (
        "good",
        f"within noise of the best ({gap:+.3f} vs margin {margin:.3f}){note}",
        worse,
        unstable,
    )


def run_verdicts(configs: pd.DataFrame) -> dict[str, str]:
    """run id → verdict of its configuration (the value written to tag lrstudy.diagnosis)."""
    return {rid: row["verdict"] for _, row in configs.iterrows() for rid in row["run_ids"]}
