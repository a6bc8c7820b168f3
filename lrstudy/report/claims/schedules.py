"""Schedules against a constant LR, and warmup against no warmup.

Every schedule is compared at its own best LR (the family best, chosen as the report chooses it),
so a schedule is not penalised for a grid tuned to another one.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lrstudy.report.analyze import AXES, fmt_value
from lrstudy.report.claims import decide as D
from lrstudy.report.claims.evidence import (
    INCONCLUSIVE,
    Claim,
    Evidence,
    Finding,
    Frames,
    inconclusive,
)
from lrstudy.report.claims.measures import scored_acc, stable
from lrstudy.report.diagnose import OSC_MAX, family_bests

FAMILY = "schedules"
WARMUP = "+warmup"
# A tenth of a decade (×1.26): less than any LR grid a study would use, so one grid step up counts.
WARMUP_MARGIN = 0.1


def _best_rows(frames: Frames) -> pd.DataFrame:
    """The best configuration of every family, with a `group` column: optimizer and other axes
    (what must match for two schedules to be compared)."""
    configs = frames.configs
    rows = configs.loc[list(family_bests(configs).values())].copy()
    rows["group"] = rows.apply(
        lambda r: " · ".join([r["optimizer"], *(f"{a}={r[a]}" for a in AXES if pd.notna(r[a]))]),
        axis=1,
    )
    return rows


def _accs(frames: Frames, config: str) -> np.ndarray:
    t = frames.trials
    return scored_acc(t)[t["config"] == config].to_numpy(dtype=float)


def beat_constant(frames: Frames) -> Finding:
    rows = _best_rows(frames)
    verdicts, ev, lines = [], [], []
    several = rows["group"].nunique() > 1  # then every label names its group
    for group, g in rows.groupby("group", sort=True):
        const = g[g["schedule"] == "constant"]
        if const.empty:
            continue
        c, where = const.iloc[0], f"{group}: " if several else ""
        base = _accs(frames, c["config"])
        what = f"{where}final val acc, constant (lr={fmt_value(c['lr'])})"
        ev.append(D.values_evidence(what, base))
        for _, s in g[~g["schedule"].isin(["constant", "constant" + WARMUP])].iterrows():
            acc = _accs(frames, s["config"])
            est, se, na, nb = D.difference(acc, base)
            v = D.greater(est, se, D.ACC_MARGIN)
            verdicts.append(v)
            what = f"{where}{s['schedule']} (lr={fmt_value(s['lr'])}) − constant"
            ev.append(Evidence(what, est, se, f"{na} vs {nb}", kind="se"))
            lines.append(f"{where}{s['schedule']} {v.replace('_', ' ')}")
    if not verdicts:
        return inconclusive("needs a constant schedule and at least one other, same optimizer")
    verdict = D.majority(verdicts)
    won = sum(v == "supported" for v in verdicts)
    return Finding(verdict, f"{won}/{len(verdicts)} schedules clearly beat constant ({'; '.join(lines)})",
                   tuple(ev))  # fmt: skip


def max_stable_lr(trials: pd.DataFrame, start: float) -> dict[int, tuple[float, bool]]:
    """seed → (highest LR reached by walking up the grid from `start` while every LR trains
    stably, whether that is the top of the grid). Below `start` only when `start` itself is
    unstable for that seed (then the highest stable LR below it, or NaN)."""
    out = {}
    for seed, g in trials.groupby("seed", sort=True):
        g = g.sort_values("lr")
        ok = g.apply(stable, axis=1).to_numpy()
        lrs = g["lr"].to_numpy(dtype=float)
        last = math.nan
        for lr, s in zip(lrs[lrs >= start], ok[lrs >= start], strict=True):
            if not s:
                break
            last = lr
        if math.isnan(last) and ok[lrs < start].any():
            last = float(lrs[lrs < start][ok[lrs < start]].max())
        out[int(seed)] = (last, bool(np.isfinite(last) and last == lrs.max()))
    return out


def _family_trials(frames: Frames, row: pd.Series) -> pd.DataFrame:
    return frames.trials[frames.trials["family"] == row["family"]]


def warmup_higher(frames: Frames) -> Finding:
    configs = frames.configs
    bests = family_bests(configs)
    verdicts, ev, lines = [], [], []
    fams = configs.drop_duplicates("family")
    for _, warm in fams[fams["schedule"].str.endswith(WARMUP)].iterrows():
        plain_name = warm["family"].replace(warm["schedule"], warm["schedule"][: -len(WARMUP)], 1)
        plain = fams[fams["family"] == plain_name]
        if plain.empty:
            continue
        arms = []
        for row in (warm, plain.iloc[0]):
            start = configs.loc[bests[row["family"]], "lr"] if row["family"] in bests else -math.inf
            arms.append(max_stable_lr(_family_trials(frames, row), start))
        seeds = sorted(set(arms[0]) & set(arms[1]))
        diffs = [math.log10(arms[0][s][0] / arms[1][s][0]) for s in seeds]
        opt, labels = warm["optimizer"], (warm["schedule"], plain.iloc[0]["schedule"])
        for label, arm in zip(labels, arms, strict=True):
            top = sum(arm[s][1] for s in seeds)
            what = f"{opt}: highest stable LR, {label} ({top} at the grid's top)"
            ev.append(D.geo_evidence(what, [arm[s][0] for s in seeds]))
        what = f"{opt}: log10 ratio {labels[0]} / {labels[1]}"
        ev.append(D.estimate_evidence(what, diffs, unit="decades"))
        if 2 * sum(arms[1][s][1] for s in seeds) > len(seeds):
            verdicts.append(INCONCLUSIVE)
            lines.append(f"{warm['family']}: without warmup the grid's top LR is still stable")
            continue
        est, se, _ = D.mean_se(diffs)
        verdicts.append(D.greater(est, se, WARMUP_MARGIN))
        lines.append(
            f"{warm['family']}: {est:+.2f} ± {se:.2f} decades ({verdicts[-1].replace('_', ' ')})"
        )
    if not verdicts:
        return inconclusive(
            "needs a schedule both with and without warmup (e.g. constant and constant+warmup)"
        )
    return Finding(D.majority(verdicts), "; ".join(lines), tuple(ev))


CLAIMS = [
    Claim("schedules_beat_constant", FAMILY,
          "LR schedules (step, exponential, inverse-time, linear, cosine, restarts, cyclic, "
          "one-cycle, plateau) end better than a constant LR.",
          "Each schedule at its own best LR against constant at its best LR (same optimizer and "
          "other axes): difference of final val accuracy (a diverged seed counts as chance), "
          + D.greater_rule("each difference", f"{D.ACC_MARGIN:g}") + " Then "
          + D.MAJORITY_RULE, "lr-sensitivity", beat_constant),
    Claim("warmup_allows_higher_lr", FAMILY, "Warmup lets a higher peak LR train stably.",
          "Per seed, walk up the LR grid from the family's best LR while every LR trains stably "
          f"(no divergence, oscillation index ≤ {OSC_MAX:g}, accuracy above the chance band); the "
          "last one is the highest stable LR. Paired by seed, log10 of with-warmup / without: "
          + D.greater_rule("the mean", f"{WARMUP_MARGIN:g} decades")
          + " Inconclusive when, without warmup, the grid's top LR is still stable in most seeds "
          "(the grid never reached the limit). Then " + D.MAJORITY_RULE, "stability",
          warmup_higher),
]  # fmt: skip
