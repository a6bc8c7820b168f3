"""Verdicts per configuration: too low / good / too high / diverged / at chance.

A family is every configuration that shares optimizer, schedule and the other swept axes; within
a family the LRs are compared with the family's best LR, chosen by the same rule that crowns the
study's best configuration (`lrstudy.report.best`). The same rules are printed in the report
(`rules_text`), so the page and the code cannot disagree.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lrstudy.report.analyze import fmt_value
from lrstudy.report.best import edge_note, pick_best
from lrstudy.report.curve_metrics import END_WINDOW, EXPLODE_RATIO, FALLING_SHARE, FALLING_T
from lrstudy.report.metric import DEFAULT, RankMetric

# "Clearly worse" needs a gap that matters in practice (2 points of accuracy) AND one that seed
# noise cannot explain (twice the best configuration's seed std); the larger of the two applies.
CLEAR_MARGIN = 0.02
CLEAR_STDS = 2.0
# Any other ranking metric (a loss, a user's score) has no unit that "matters in practice": the
# practical part of the margin is this share of the family's spread (best minus worst seed-mean
# final value among its non-diverged LRs), so "clearly worse" means "in the worse 90 % of the
# range the LR grid produced, and beyond seed noise".
CLEAR_SPREAD_SHARE = 0.1
# Oscillation index 1 = the smoothed loss travelled twice its net drop: a converging run with
# plateau noise stays well below (~0.1-0.3 on the reference tasks), LR-driven swings go above.
OSC_MAX = 1.0
# Seed-to-seed std of the final score above 5 points of accuracy: the outcome depends more on the
# seed than on the LR, the typical symptom of an LR at the edge of stability (good LRs: ~0.5-1.5).
SPREAD_MAX = 0.05
# At chance: not measurably above 1/num_classes. An accuracy on n validation samples has a
# binomial std of sqrt(p(1-p)/n); 2 of those (or 2 points, whichever is larger) is the band.
CHANCE_STDS = 2.0
CHANCE_MIN_MARGIN = 0.02
# A train accuracy this high leaves nothing to learn on the train set: a loss that still falls is
# only growing logits, and more steps will not close a gap in val accuracy.
TRAIN_ACC_SATURATED = 0.99

VERDICTS = ("too_low", "good", "too_high", "diverged", "at_chance")  # values of lrstudy.diagnosis
VERDICT_TEXT = {
    "too_low": "too low",
    "good": "good",
    "too_high": "too high",
    "diverged": "diverged",
    "at_chance": "at chance",
}
_COLUMNS = ("verdict", "reason", "clearly_worse", "unstable", "best_lr", "best_score")


def rules_text(metric: RankMetric = DEFAULT) -> list[str]:
    """The verdict rules, with the thresholds this module uses, for the report page."""
    if not metric.is_val_acc:
        return _rules_text_other(metric)
    return [
        "Configurations are compared within a family (same optimizer, schedule and other swept "
        "settings); seeds are aggregated (mean, sample std).",
        f"diverged — any seed diverged: outcome tag 'diverged', a non-finite loss, or a loss above "
        f"{EXPLODE_RATIO:g}× its starting level. A configuration with a diverged seed is never "
        "the best.",
        "best LR of a family — the highest mean final validation accuracy among its non-diverged "
        "LRs; the study's best configuration is the best of the family bests. The best LR is "
        "never 'too high' (no other LR did better): if it is unstable the reason says so, and if "
        "it is the highest or lowest LR tried, the optimum may lie beyond the grid.",
        f"at chance — mean final accuracy within max({CHANCE_MIN_MARGIN:g}, {CHANCE_STDS:g} × "
        "binomial std on the validation samples) of 1/num_classes: it learned nothing measurable. "
        "Never good: too low or too high by its LR's side of the family's best; 'at chance' when "
        "no LR of the family learned (then the grid says nothing about the LR).",
        f"clearly worse — mean final accuracy below the best by more than max({CLEAR_MARGIN:g}, "
        f"{CLEAR_STDS:g} × the best LR's seed std).",
        f"unstable — oscillation index above {OSC_MAX:g} (path length of the bin-averaged train "
        f"loss over its net drop, minus 1; 0 = monotone descent) or seed std of the final accuracy "
        f"above {SPREAD_MAX:g}.",
        "too high — LR above the best LR and unstable or clearly worse.",
        f"too low — LR below the best LR and clearly worse. 'Loss still falling' notes that in "
        f"most seeds the train loss kept falling over the last {END_WINDOW:.0%} of training "
        f"(slope ≥ {FALLING_T:g} standard errors below zero, and at least {FALLING_SHARE:.0%} of "
        f"the run's whole drop) while train accuracy stayed below {TRAIN_ACC_SATURATED:g}: more "
        "steps might close the gap.",
        "good — everything else: within noise of the best, stable.",
    ]


def _rules_text_other(m: RankMetric) -> list[str]:
    """The rules for a study ranked by another metric than final val accuracy."""
    return [
        f"Configurations are ranked by the final value of {m.name!r} ({m.direction}: the "
        "study's ranking metric, its last logged value per run), compared within a family (same "
        "optimizer, schedule and other swept settings); seeds are aggregated (mean, sample std).",
        f"diverged — any seed diverged: outcome tag 'diverged', a non-finite loss, or a loss above "
        f"{EXPLODE_RATIO:g}× its starting level. A configuration with a diverged seed is never "
        "the best.",
        f"best LR of a family — the best mean final {m.name} ({m.direction}) among its "
        "non-diverged LRs; the study's best configuration is the best of the family bests. The "
        "best LR is never 'too high': if it is unstable the reason says so, and if it is the "
        "highest or lowest LR tried, the optimum may lie beyond the grid.",
        f"clearly worse — mean final {m.name} worse than the best by more than "
        f"max({CLEAR_SPREAD_SHARE:g} × the family's spread (best minus worst mean of its "
        f"non-diverged LRs), {CLEAR_STDS:g} × the best LR's seed std). (The 2-points-of-accuracy "
        "margin of accuracy-ranked studies has no meaning for an arbitrary metric.)",
        f"unstable — oscillation index above {OSC_MAX:g} (path length of the bin-averaged train "
        "loss over its net drop, minus 1; 0 = monotone descent). The seed-spread limit of "
        "accuracy-ranked studies does not apply; 'at chance' only where an accuracy and the "
        "number of classes were logged.",
        "too high — LR above the best LR and unstable or clearly worse.",
        f"too low — LR below the best LR and clearly worse. 'Loss still falling' notes that in "
        f"most seeds the train loss kept falling over the last {END_WINDOW:.0%} of training: "
        "more steps might close the gap.",
        "good — everything else: within noise of the best, stable.",
    ]


def _metric(configs: pd.DataFrame) -> RankMetric:
    if "metric" in configs.columns and len(configs):
        return RankMetric(str(configs["metric"].iloc[0]), str(configs["metric_mode"].iloc[0]))
    return DEFAULT


def family_spreads(configs: pd.DataFrame) -> dict[str, float]:
    """family → best minus worst seed-mean score among its non-diverged configurations."""
    alive = configs[(configs["n_diverged"] == 0) & np.isfinite(configs["score"].astype(float))]
    return {fam: float(g["score"].max() - g["score"].min()) for fam, g in alive.groupby("family")}


def family_bests(configs: pd.DataFrame) -> dict[str, object]:
    """family → index (in `configs`) of its best configuration: highest mean score among the
    configurations without a diverged seed, ties broken as `best_config` breaks them."""
    alive = configs[(configs["n_diverged"] == 0)]
    out = {}
    for fam, g in alive.groupby("family", sort=True):
        name = pick_best(g.set_index("config")["score"])
        if name is not None:
            out[fam] = g.index[g["config"] == name][0]
    return out


def diagnose(configs: pd.DataFrame, tried: dict[str, pd.Series] | None = None) -> pd.DataFrame:
    """Add verdict, reason, best_lr, best_score, clearly_worse, unstable to a config table.

    `tried`: per family, LRs tried beyond the table's (trials successive halving stopped), so
    that a best LR is not called the end of a grid whose end was tried and stopped."""
    bests = family_bests(configs)
    lrs = {fam: g["lr"] for fam, g in configs.groupby("family", sort=True)}
    for fam, more in (tried or {}).items():
        if fam in lrs:
            lrs[fam] = pd.concat([lrs[fam], more], ignore_index=True)
    metric, spreads = _metric(configs), family_spreads(configs)
    cols: dict[str, list] = {k: [] for k in _COLUMNS}
    for _, row in configs.iterrows():
        best = configs.loc[bests[row["family"]]] if row["family"] in bests else None
        spread = spreads.get(row["family"], 0.0)
        values = (*_verdict(row, best, lrs[row["family"]], metric, spread), np.nan, np.nan)
        if best is not None:
            values = (*values[:4], best["lr"], best["score"])
        for k, v in zip(_COLUMNS, values, strict=True):
            cols[k].append(v)
    return configs.assign(**cols)


def chance_band(row: pd.Series) -> tuple[float, float] | None:
    """(chance level, margin) for a configuration, or None when the number of classes is not
    known (then nothing is called 'at chance')."""
    c = row.get("num_classes", np.nan)
    if c is None or not np.isfinite(c) or c < 2:
        return None
    p = 1.0 / c
    n_val = row.get("n_val", np.nan)
    noise = math.sqrt(p * (1 - p) / n_val) if n_val and np.isfinite(n_val) and n_val > 0 else 0.0
    return p, max(CHANCE_MIN_MARGIN, CHANCE_STDS * noise)


def at_chance(row: pd.Series) -> str | None:
    """'at chance (0.101 vs 1/10 = 0.100 ± 0.055)' when the configuration's mean final val
    accuracy is within the chance band, else None."""
    band, acc = chance_band(row), row.get("final_val_acc", np.nan)
    if band is None or acc is None or not np.isfinite(acc) or acc > band[0] + band[1]:
        return None
    return f"at chance ({acc:.3f} vs 1/{int(row['num_classes'])} = {band[0]:.3f} ± {band[1]:.3f})"


def _falling_note(row: pd.Series) -> str:
    """The 'still falling' hint: only when more steps could still help."""
    if not row.get("still_falling") or _saturated(row):
        return ""
    return f"; loss still falling at the end ({int(row.get('n_falling') or 0)}/{row['n']} seeds)"


def _saturated(row: pd.Series) -> bool:
    acc = row.get("final_train_acc", np.nan)
    return acc is not None and np.isfinite(acc) and acc >= TRAIN_ACC_SATURATED


def _chance_hint(row: pd.Series) -> str:
    """What the curves say about a family that learned nothing."""
    if _saturated(row):
        return f"; train accuracy {row['final_train_acc']:.3f}: it fits the train set, no more"
    return _falling_note(row) or "; no clear fall of the train loss at the end"


def _instability(row: pd.Series, metric: RankMetric = DEFAULT) -> list[str]:
    osc, spread = row["osc_index"], row["score_std"]
    why = []
    if np.isfinite(osc) and osc > OSC_MAX:
        why.append(f"oscillation index {osc:.2f} > {OSC_MAX:g}")
    if metric.is_val_acc and np.isfinite(spread) and spread > SPREAD_MAX:
        why.append(f"seed std {spread:.3f} > {SPREAD_MAX:g}")
    return why


def _best_reason(row: pd.Series, family_lrs: pd.Series, unstable: list[str]) -> str:
    reason = "best LR of its family" + edge_note(row["lr"], family_lrs)
    if unstable:
        reason += "; unstable: " + "; ".join(unstable) + " (a lower LR may be as good and safer)"
    return reason


def _verdict(
    row: pd.Series,
    best: pd.Series | None,
    family_lrs: pd.Series,
    metric: RankMetric = DEFAULT,
    family_spread: float = 0.0,
) -> tuple[str, str, bool, bool]:
    if row["n_diverged"] > 0:
        at = row.get("first_diverged_at")
        where = f", first at step {int(at)}" if at is not None and np.isfinite(at) else ""
        return "diverged", f"diverged in {row['n_diverged']}/{row['n']} seeds{where}", False, False
    chance = at_chance(row)
    if best is None or not np.isfinite(row["score"]):
        if chance:
            return "at_chance", chance, False, False
        if not np.isfinite(row["score"]) and not metric.is_val_acc:
            return "good", f"no final {metric.name} was logged: nothing to rank it by", False, False
        return "good", "no non-diverged configuration to compare with", False, False
    why_unstable = _instability(row, metric)
    unstable = bool(why_unstable)
    if at_chance(best):  # nothing in the family learned: the LR grid cannot point a direction
        hint = _chance_hint(row)
        what = chance or "at chance"
        return "at_chance", f"{what}: no LR of this family learned{hint}", False, unstable
    if row["config"] == best["config"]:
        return "good", _best_reason(row, family_lrs, why_unstable), False, unstable
    best_std = best["score_std"] if np.isfinite(best["score_std"]) else 0.0
    practical = CLEAR_MARGIN if metric.is_val_acc else CLEAR_SPREAD_SHARE * family_spread
    margin = max(practical, CLEAR_STDS * best_std)
    gap = best["score"] - row["score"]
    worse = bool(gap > margin) or chance is not None
    lr, best_lr = row["lr"], best["lr"]
    if metric.is_val_acc:
        versus = f"{gap:.3f} below the best ({best['score']:.3f} at lr={fmt_value(best_lr)}; margin {margin:.3f})"
    else:
        versus = (f"{metric.name} {metric.fmt(row['metric_value'])}: {gap:.3g} "
                  f"{'below' if metric.mode == 'max' else 'above'} the best "
                  f"({metric.fmt(best['metric_value'])} at lr={fmt_value(best_lr)}; margin {margin:.3g})")  # fmt: skip
    if chance:
        versus = f"{chance}; {versus}"
    higher = bool(np.isfinite(lr) and np.isfinite(best_lr) and lr > best_lr)
    lower = bool(np.isfinite(lr) and np.isfinite(best_lr) and lr < best_lr)
    if unstable and higher:
        return "too_high", "unstable: " + "; ".join(why_unstable), worse, unstable
    if worse and higher:
        return "too_high", versus, worse, unstable
    if worse and lower:
        return "too_low", versus + _falling_note(row), worse, unstable
    if chance:  # same LR as the best (another variant of it) and learned nothing
        return "at_chance", versus, worse, unstable
    note = "; unstable: " + "; ".join(why_unstable) if unstable else ""
    return (
        "good",
        f"within noise of the best ({gap:+.3g} vs margin {margin:.3g}){note}"
        if not metric.is_val_acc
        else f"within noise of the best ({gap:+.3f} vs margin {margin:.3f}){note}",
        worse,
        unstable,
    )


def run_verdicts(configs: pd.DataFrame) -> dict[str, str]:
    """run id → verdict of its configuration (the value written to tag lrstudy.diagnosis)."""
    return {rid: row["verdict"] for _, row in configs.iterrows() for rid in row["run_ids"]}
