"""Claims about LR-free optimizers (issue 16): do they make tuning the LR unnecessary?

The baselines are the study's LR-free optimizers at their packages' defaults (`baselines:` in a
study; `lrstudy.report.baselines`). The tuned best they are held against is *cross-fitted*, as
the LR regimes are: the seeds are split in two halves (sorted, alternately), the grid's best
configuration is picked on one half and measured on the other, both ways, and each held-out seed
gives one paired difference (same seed: same initialisation and batch order as the baseline's).
Picking and measuring on the same seeds would hand the grid its luckiest seeds (winner's curse)
and make "LR-free is behind" look stronger than it is.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lrstudy import names as N
from lrstudy.report.analyze import fmt_value
from lrstudy.report.baselines import baseline_mask
from lrstudy.report.best import best_config, pick_best
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

MARGIN = D.ACC_MARGIN  # 1 point of accuracy
FACTOR = 3.0  # "within 3×" of the grid's best LR
SETTLED_SHARE = 0.25  # the settled step size: median over the last quarter of the steps
ADAPTIVE_VS_ADAM = ("prodigy", "dadapt_adam")  # Adam-like updates: comparable to Adam's LR

CROSS_FIT = (
    "The tuned best is cross-fitted: picked (the report's rule) on one half of the seeds and "
    "measured on the other, both ways; each held-out seed gives one paired difference "
    "(baseline minus tuned, same seed). "
)


def _halves(trials: pd.DataFrame) -> tuple[tuple, tuple] | None:
    seeds = sorted(pd.unique(trials["seed"].dropna()).tolist())
    return (tuple(seeds[0::2]), tuple(seeds[1::2])) if len(seeds) >= 2 else None


def _by_seed(rows: pd.DataFrame) -> pd.Series:
    return rows.set_index("seed")["final_val_acc"].astype(float)


def held_out_differences(
    trials: pd.DataFrame, grid: pd.Series, baseline: pd.DataFrame
) -> tuple[list[float], list[str]]:
    """Paired held-out differences (baseline − cross-fitted tuned best) and the configurations
    each half picked. `grid` is the mask of the trials the tuned best is chosen from."""
    halves = _halves(trials)
    if halves is None:
        return [], []
    diffs: list[float] = []
    picks: list[str] = []
    for pick, measure in (halves, halves[::-1]):
        best = best_config(trials[grid & trials["seed"].isin(pick)])
        if best is None:
            continue
        picks.append(str(best.name))
        held = trials[grid & (trials["config"] == best.name) & trials["seed"].isin(measure)]
        tuned, base = _by_seed(held), _by_seed(baseline[baseline["seed"].isin(measure)])
        pair = (base - tuned).dropna()
        diffs += [float(d) for d in pair if math.isfinite(d)]
    return diffs, picks


def _baselines(frames: Frames) -> tuple[pd.Series, dict[str, pd.DataFrame]]:
    t = frames.trials
    mask = baseline_mask(t)
    return mask, {str(n): rows for n, rows in t[mask].groupby("optimizer", sort=True)}


def within_one_point(frames: Frames) -> Finding:
    t = frames.trials
    mask, baselines = _baselines(frames)
    if not baselines:
        return inconclusive("no LR-free baseline in this study (baselines: [prodigy, ...])")
    if mask.all():
        return inconclusive("no tuned grid beside the baselines")
    verdicts, ev, lines = [], [], []
    for name, rows in baselines.items():
        diffs, picks = held_out_differences(t, ~mask, rows)
        est, se, n = D.mean_se(diffs)
        v = D.not_less(est, se, MARGIN) if n >= D.MIN_N else INCONCLUSIVE
        verdicts.append(v)
        ev.append(D.estimate_evidence(f"{name} − tuned best (held-out seeds)", diffs))
        lines.append(
            f"{name}: {_pts(est)} ± {_pts(se, False)} se points (n={n}; tuned: {_picks(picks)})"
        )
    return Finding(D.every(verdicts), "; ".join(lines), tuple(ev))


def schedule_free_matches_cosine(frames: Frames) -> Finding:
    t = frames.trials
    mask, baselines = _baselines(frames)
    sf = baselines.get("schedulefree_adamw")
    if sf is None:
        return inconclusive("needs schedulefree_adamw among the study's baselines")
    cosine = ~mask & (t["schedule"].astype(str).str.split("+").str[0] == "cosine")
    if not cosine.any():
        return inconclusive("needs tuned configurations with a cosine schedule")
    diffs, picks = held_out_differences(t, cosine, sf)
    est, se, n = D.mean_se(diffs)
    verdict = D.near(est, se, 0.0, MARGIN) if n >= D.MIN_N else INCONCLUSIVE
    ev = D.estimate_evidence("schedulefree_adamw − best cosine (held-out seeds)", diffs)
    reason = (
        f"schedulefree_adamw − best tuned cosine = {_pts(est)} ± {_pts(se, False)} se points "
        f"(n={n}; cosine picked: {_picks(picks)})"
    )
    return Finding(verdict, reason, (ev,))


def settled_step_size(history: pd.DataFrame, run_ids: list[str]) -> list[float]:
    """Per run: the median of its logged step size (`lr`: d·lr) over the last quarter of steps."""
    h = history[history["run_id"].isin(run_ids) & (history["key"] == N.LR)]
    out = []
    for _, rows in h.groupby("run_id"):
        steps = rows.sort_values("step")
        tail = steps["value"].to_numpy(float)[-max(1, int(len(steps) * SETTLED_SHARE)) :]
        tail = tail[np.isfinite(tail) & (tail > 0)]
        if len(tail):
            out.append(float(np.median(tail)))
    return out


def step_size_near_adam(frames: Frames) -> Finding:
    t, configs = frames.trials, frames.configs
    adam = configs[(configs["optimizer"] == "adam") & (configs["n_diverged"] == 0)]
    constant = adam[adam["schedule"].astype(str) == "constant"]
    adam = constant if len(constant) else adam  # like for like: the baselines ran constant
    name = pick_best(adam.set_index("config")["score"]) if len(adam) else None
    if name is None:
        return inconclusive("needs an Adam grid with a configuration that did not diverge")
    best = adam[adam["config"] == name].iloc[0]
    grid = t.loc[t["optimizer"] == "adam", "lr"].dropna()
    mask, baselines = _baselines(frames)
    present = [o for o in ADAPTIVE_VS_ADAM if o in baselines]
    if not present:
        return inconclusive(f"needs {' or '.join(ADAPTIVE_VS_ADAM)} among the study's baselines")
    verdicts, ev, lines = [], [], []
    ev.append(Evidence(f"grid's best Adam LR ({name})", float(best["lr"]), math.nan,
                       int(best["n"]), digits=4))  # fmt: skip
    for opt in present:
        steps = settled_step_size(frames.history, baselines[opt]["run_id"].tolist())
        if not steps:
            verdicts.append(INCONCLUSIVE)
            lines.append(f"{opt}: no step size logged")
            continue
        settled = float(np.exp(np.mean(np.log(steps))))
        ratio = settled / float(best["lr"])
        ev.append(D.geo_evidence(f"{opt}: settled step size (d·lr, last quarter)", steps))
        ev.append(Evidence(f"{opt}: settled / Adam's best", ratio, math.nan, len(steps),
                           unit="×", digits=2))  # fmt: skip
        beyond = (settled > grid.max() and best["lr"] == grid.max()) or (
            settled < grid.min() and best["lr"] == grid.min()
        )
        if abs(math.log10(ratio)) <= math.log10(FACTOR):
            verdicts.append(SUPPORTED)
        else:
            verdicts.append(INCONCLUSIVE if beyond else NOT_SUPPORTED)
        lines.append(f"{opt}: {fmt_value(settled)} vs {fmt_value(best['lr'])} ({ratio:.2g}×)")
    return Finding(D.every(verdicts), "; ".join(lines), tuple(ev))


def _pts(x: float, sign: bool = True) -> str:
    return f"{100 * x:{'+' if sign else ''}.1f}" if math.isfinite(x) else "—"


def _picks(picks: list[str]) -> str:
    return " / ".join(dict.fromkeys(picks)) or "none"


CLAIMS = [
    Claim("lr_free_within_1pt", "LR-free",
          "An LR-free optimizer (Prodigy, D-Adaptation, schedule-free) at its defaults comes "
          "within 1 point of accuracy of the tuned best.",
          CROSS_FIT + "Per baseline: " + D.not_less_rule(
              "the mean held-out difference (baseline − tuned best)", "1 point") + " Then "
          + D.EVERY_RULE, "lr-sensitivity", within_one_point),
    Claim("schedulefree_matches_cosine", "LR-free",
          "Schedule-free AdamW at its defaults matches the best tuned cosine schedule.",
          CROSS_FIT.replace("The tuned best", "The best cosine configuration") + D.near_rule(
              "the mean held-out difference (schedule-free − best cosine)", "0", "1 point"),
          "lr-sensitivity", schedule_free_matches_cosine),
    Claim("adaptive_step_near_adam_best", "LR-free",
          f"The step size Prodigy / D-Adaptation settles on lands within {FACTOR:g}× of the "
          "grid's best LR for Adam.",
          "For Prodigy and D-Adaptation Adam at their defaults: the step size each applied "
          "(logged lr = d·lr), median over the last quarter of its steps, geometric mean over "
          "seeds, against the LR of the best Adam configuration without a diverged seed (with a "
          "constant schedule when the grid has one, as the baselines ran). "
          f"Supported when within {FACTOR:g}× either way; not supported when further; "
          "inconclusive when Adam's best sits at the grid's end and the step size lies beyond "
          "it. Then " + D.EVERY_RULE, "lr-sensitivity", step_size_near_adam),
]  # fmt: skip
