"""Too low, appropriate, too high: the 3 × 3 table and the six claims read from it.

The regimes are *cross-fitted*, so that choosing them cannot decide a verdict. "Too low" is an LR
the diagnosis already calls clearly worse and "appropriate" the best, so measured on the seeds they
were chosen on, "appropriate beats too low" could not come out otherwise. Instead the seeds are
split in two halves (sorted seeds, alternately); on each half the report's own rules pick the
regimes — appropriate = the half's best configuration (`best_config`), too low / too high = the
nearest lower / higher LR of its family that the half's diagnosis (`diagnose`) calls too low / too
high or diverged — and every claim is measured on the *other* half's seeds at those LRs. Both
directions are pooled: each arm holds every seed once, each measured at an LR chosen without it.
With fewer than two seeds there is no other half, and the claims say so ("not decidable").

Why cross-fitting rather than an independent measurement (say, picking by train loss and
measuring val accuracy): the regimes must mean what the report means by them (its diagnosis, its
best), and any measurement taken on the same seeds shares their noise; held-out seeds share none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrstudy.report.analyze import config_table, fmt_value, mean_std
from lrstudy.report.best import best_config
from lrstudy.report.claims import decide as D
from lrstudy.report.claims.evidence import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    Claim,
    Evidence,
    Finding,
    Frames,
    Table,
    inconclusive,
)
from lrstudy.report.claims.measures import halfway_share, scored_acc
from lrstudy.report.diagnose import OSC_MAX, SPREAD_MAX, diagnose

FAMILY = "LR regimes"
# Speed is a share of the run's steps; 5% of a run is a visible shift on a loss curve and about
# the width of the bins the loss is averaged in (2% of the steps) twice over.
SPEED_MARGIN = 0.05
# Oscillation index (path length / net drop − 1): 0.2 is about the spread between seeds of a
# healthy run; instability pushes it past diagnose's OSC_MAX = 1.
OSC_MARGIN = 0.2
REGIMES = ("too low", "appropriate", "too high")
MIN_SEEDS = 2  # one seed to choose on, another to measure on
NOT_DECIDABLE = (f"not decidable: needs ≥ {MIN_SEEDS} seeds per configuration (the regimes are "
                 "chosen on one half of the seeds and measured on the other)")  # fmt: skip
PICKING = (
    "Regimes are cross-fitted: the seeds are split in two halves (sorted seeds, alternately); on "
    "each half the report's rules pick appropriate = that half's best configuration and too low "
    "/ too high = the nearest lower / higher LR of its family that that half's diagnosis calls "
    "too low / too high or diverged; each claim is then measured on the other half's seeds at "
    "those LRs, both ways, pooled (every seed once, at LRs chosen without it). So being picked "
    "as worse or as best does not decide the verdict. Not decidable with fewer than "
    f"{MIN_SEEDS} seeds per configuration. "
)


@dataclass(frozen=True)
class Fold:
    """One direction of the cross-fit: regimes picked on `pick_seeds`, measured on the others."""

    pick_seeds: tuple
    measure_seeds: tuple
    picks: dict[str, pd.Series | None]  # regime → its config row in the pick half's diagnosis
    runs: dict[str, pd.DataFrame]  # regime → measured trial rows (halfway, acc; measure seeds)

    def has(self, *names: str) -> bool:
        return all(self.picks[n] is not None for n in names)


@dataclass(frozen=True)
class Regime:
    """One regime over the folds that picked it: its LRs and the pooled out-of-fold runs."""

    name: str
    picks: tuple[pd.Series, ...]  # the config row each fold picked
    runs: pd.DataFrame

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def n_diverged(self) -> int:
        return int(self.runs["diverged"].astype(bool).sum())

    @property
    def lr_text(self) -> str:
        """'0.1' when every fold picked it, '0.1 / 0.316' (one LR per fold) otherwise."""
        lrs = list(dict.fromkeys(fmt_value(float(p["lr"])) for p in self.picks))
        return " / ".join(lrs)

    def values(self, col: str) -> np.ndarray:
        return self.runs[col].to_numpy(dtype=float)


def seed_halves(trials: pd.DataFrame) -> tuple[tuple, tuple] | None:
    """(even-indexed, odd-indexed) of the sorted seeds; None with fewer than MIN_SEEDS seeds."""
    seeds = sorted(pd.unique(trials["seed"].dropna()).tolist())
    if len(seeds) < MIN_SEEDS:
        return None
    return tuple(seeds[0::2]), tuple(seeds[1::2])


def pick_regimes(trials: pd.DataFrame) -> dict[str, pd.Series | None] | None:
    """The regimes the report's rules pick on these trials (one half of the seeds): config rows
    of `diagnose(config_table(trials))`; None when no configuration is crowned."""
    best = best_config(trials)
    if best is None:
        return None
    configs = diagnose(config_table(trials))
    row = configs[configs["config"] == best.name].iloc[0]
    family = configs[configs["family"] == row["family"]].sort_values("lr")
    low = family[(family["lr"] < row["lr"]) & (family["verdict"] == "too_low")]
    high = family[(family["lr"] > row["lr"]) & family["verdict"].isin(["too_high", "diverged"])]
    return {
        "too low": low.iloc[-1] if len(low) else None,
        "appropriate": row,
        "too high": high.iloc[0] if len(high) else None,
    }


def _fold(frames: Frames, pick_seeds: tuple, measure_seeds: tuple) -> Fold | None:
    t = frames.trials
    picks = pick_regimes(t[t["seed"].isin(pick_seeds)])
    if picks is None:
        return None
    measured = t[t["seed"].isin(measure_seeds)]
    chosen = measured[
        measured["config"].isin([p["config"] for p in picks.values() if p is not None])
    ]
    # the level to get halfway to: the final train loss of the appropriate LR on the pick half
    picked = t[t["seed"].isin(pick_seeds) & (t["config"] == picks["appropriate"]["config"])]
    end = float(pd.to_numeric(picked["final_train_loss"], errors="coerce").mean())
    chosen = chosen.assign(
        halfway=chosen["run_id"].map(halfway_share(chosen, frames.history, end)),
        acc=scored_acc(chosen),
    )
    runs = {
        name: chosen[chosen["config"] == p["config"]] if p is not None else chosen.iloc[:0]
        for name, p in picks.items()
    }
    return Fold(pick_seeds, measure_seeds, picks, runs)


@dataclass(frozen=True)
class CrossFit:
    """The folds of a study (both directions), and the regimes pooled over them."""

    folds: tuple[Fold, ...]

    def using(self, *names: str) -> tuple[Fold, ...]:
        """The folds that picked every named regime (a comparison uses only those)."""
        return tuple(f for f in self.folds if f.has(*names))

    def regime(self, name: str, among: tuple[Fold, ...] | None = None) -> Regime | None:
        folds = [f for f in (self.folds if among is None else among) if f.has(name)]
        if not folds:
            return None
        runs = pd.concat([f.runs[name] for f in folds])
        return Regime(name, tuple(f.picks[name] for f in folds), runs)


def find_regimes(frames: Frames) -> CrossFit | str:
    """The cross-fitted regimes, or why there are none (too few seeds, nothing crowned)."""
    halves = seed_halves(frames.trials)
    if halves is None:
        return NOT_DECIDABLE
    a, b = halves
    folds = tuple(f for f in (_fold(frames, a, b), _fold(frames, b, a)) if f is not None)
    if not folds:
        return "no configuration is crowned on either half of the seeds (each has a diverged seed)"
    return CrossFit(folds)


def _cell(values: np.ndarray) -> str:
    m, sd, n = D.mean_sd(values)
    return mean_std(m, sd, n)


def _seeds(seeds: tuple) -> str:
    return ", ".join(str(int(s)) if float(s).is_integer() else str(s) for s in seeds)


def regimes_table(fit: CrossFit) -> Table:
    """The 3 × 3 table: regime × convergence speed, stability, final performance, each over the
    seeds its LR was not picked on."""
    rows = []
    for name in REGIMES:
        cells = []
        for f in fit.folds:
            p = f.picks[name]
            cells.append(f"{fmt_value(float(p['lr']))} ({p['verdict'].replace('_', ' ')})"
                         if p is not None else "none")  # fmt: skip
        picked = " / ".join(cells) if len(set(cells)) > 1 else cells[0]
        r = fit.regime(name)
        if r is None:
            rows.append((name, picked, "—", "—", "—"))
            continue
        stability = f"osc {_cell(r.values('osc_index'))}; diverged {r.n_diverged}/{r.n}"
        rows.append((name, picked, _cell(r.values("halfway")), stability, _cell(r.values("acc"))))
    folds = "; ".join(f"seeds {_seeds(f.pick_seeds)} pick, seeds {_seeds(f.measure_seeds)} measure"
                      for f in fit.folds)  # fmt: skip
    return Table(
        caption="Cross-fitted: each half of the seeds picks the regimes (as the report picks its "
        f"best and diagnoses the rest), the other half measures them ({folds}); the LR column "
        "shows each half's pick (one value when they agree) and its diagnosis on that half. "
        "Convergence speed = share of the steps needed to cover half of the drop in train loss "
        "that the appropriate LR achieves (lower = faster; 1 = never); stability = oscillation "
        "index of the train loss (non-diverged seeds; 0 = monotone descent) and diverged seeds; "
        "final performance = final val accuracy (a diverged seed counts as chance). Mean ± sample "
        "std over the measured seeds (n).",
        head=(
            "regime",
            "LR picked (diagnosis on the picking half)",
            "convergence speed",
            "stability",
            "final performance",
        ),  # fmt: skip
        rows=tuple(rows),
    )


def _setup(frames: Frames, *needed: str) -> tuple[CrossFit, tuple[Fold, ...], Table] | Finding:
    """The cross-fit, the folds that picked every needed regime, and the table; or the
    inconclusive finding that says what is missing."""
    fit = find_regimes(frames)
    if isinstance(fit, str):
        return inconclusive(fit)
    table = regimes_table(fit)
    folds = fit.using(*needed)
    if not folds:
        missing = [n for n in needed if not any(f.has(n) for f in fit.folds)]
        what = " and no ".join(missing) if missing else " and ".join(needed)
        lead = "no" if missing else "no half of the seeds picks both a"
        best = " / ".join(dict.fromkeys(fmt_value(float(f.picks["appropriate"]["lr"]))
                                        for f in fit.folds))  # fmt: skip
        return Finding(INCONCLUSIVE, f"the grid has {lead} {what} LR next to the best "
                       f"(lr={best}, picked on each half of the seeds)", table=table)  # fmt: skip
    return fit, folds, table


def _compare(frames: Frames, a: str, b: str, col: str, label: str, test, margin: float) -> Finding:
    """Verdict of `test(mean(a) − mean(b))` on column `col` of two regimes, each measured on the
    seeds it was not picked on."""
    got = _setup(frames, a, b)
    if isinstance(got, Finding):
        return got
    fit, folds, table = got
    ra, rb = fit.regime(a, folds), fit.regime(b, folds)
    est, se, na, nb = D.difference(ra.values(col), rb.values(col))
    verdict = test(est, se, margin)
    ev = (
        D.values_evidence(f"{label}, {a} (lr={ra.lr_text}; held-out seeds)", ra.values(col)),
        D.values_evidence(f"{label}, {b} (lr={rb.lr_text}; held-out seeds)", rb.values(col)),
        Evidence(f"difference ({a} − {b})", est, se, f"{na} vs {nb}", kind="se"),
    )
    reason = (f"{label} on held-out seeds: {a} − {b} = {est:+.3f} ± {se:.3f} se against a margin "
              f"of {margin:g}")  # fmt: skip
    return Finding(verdict, reason, ev, table)


def too_high_fast(frames: Frames) -> Finding:
    return _compare(frames, "appropriate", "too high", "halfway", "steps to halfway",
                    D.not_less, SPEED_MARGIN)  # fmt: skip


def too_high_worse(frames: Frames) -> Finding:
    return _compare(frames, "appropriate", "too high", "acc", "final val acc", D.greater,
                    D.ACC_MARGIN)  # fmt: skip


def too_low_slow(frames: Frames) -> Finding:
    return _compare(frames, "too low", "appropriate", "halfway", "steps to halfway",
                    D.greater, SPEED_MARGIN)  # fmt: skip


def too_low_worse(frames: Frames) -> Finding:
    return _compare(frames, "appropriate", "too low", "acc", "final val acc", D.greater,
                    D.ACC_MARGIN)  # fmt: skip


def too_high_unstable(frames: Frames) -> Finding:
    got = _compare(frames, "too high", "appropriate", "osc_index", "oscillation index",
                   D.greater, OSC_MARGIN)  # fmt: skip
    if len(got.evidence) < 3:  # no too-high LR, or not decidable
        return got
    fit = find_regimes(frames)
    high = fit.regime("too high", fit.using("too high", "appropriate"))
    diverged = Evidence("diverged held-out seeds at the too-high LR", high.n_diverged, math.nan,
                        high.n, digits=0)  # fmt: skip
    if high.n_diverged:
        reason = (f"{high.n_diverged}/{high.n} seeds diverged at lr={high.lr_text}, an LR picked "
                  "on the other half of the seeds")  # fmt: skip
        return Finding(SUPPORTED, reason, (diverged, *got.evidence), got.table)
    return Finding(got.verdict, "no held-out seed diverged; " + got.reason,
                   (diverged, *got.evidence), got.table)  # fmt: skip


def too_low_stalls(frames: Frames) -> Finding:
    worse = too_low_worse(frames)
    if len(worse.evidence) < 3:  # no too-low LR, or not decidable
        return worse
    fit = find_regimes(frames)
    low = fit.regime("too low", fit.using("too low", "appropriate"))
    falling = int(low.runs["still_falling"].astype(bool).sum())
    ev = (*worse.evidence, Evidence("held-out seeds whose loss still falls at the end", falling,
                                    math.nan, low.n, digits=0))  # fmt: skip
    if worse.verdict != SUPPORTED:
        return Finding(worse.verdict, "final accuracy: " + worse.reason, ev, worse.table)
    if 2 * falling > low.n:
        why = f"worse, but the loss still falls at the end in {falling}/{low.n} seeds: slow, not stalled"
        return Finding(NOT_SUPPORTED, why, ev, worse.table)
    why = f"worse, and the loss has stopped falling in {low.n - falling}/{low.n} seeds"
    return Finding(SUPPORTED, why, ev, worse.table)


def appropriate_best(frames: Frames) -> Finding:
    got = _setup(frames, "too low", "appropriate", "too high")
    if isinstance(got, Finding):
        return got
    fit, folds, table = got
    best = fit.regime("appropriate", folds)
    osc = D.mean_sd(best.values("osc_index"))[0]
    spread = D.mean_sd(best.values("acc"))[1]
    unstable = (math.isfinite(osc) and osc > OSC_MAX) or (
        math.isfinite(spread) and spread > SPREAD_MAX
    )
    ev = [D.values_evidence(f"oscillation index, appropriate (lr={best.lr_text}; held-out seeds)",
                            best.values("osc_index"))]  # fmt: skip
    verdicts = []
    for side in ("too low", "too high"):
        other = fit.regime(side, folds)
        est, se, na, nb = D.difference(best.values("acc"), other.values("acc"))
        ev.append(
            Evidence(f"final val acc, appropriate − {side}", est, se, f"{na} vs {nb}", kind="se")
        )
        verdicts.append(D.greater(est, se, D.ACC_MARGIN))
    if unstable:
        return Finding(NOT_SUPPORTED, f"the best LR is unstable on held-out seeds (osc {osc:.2f}, "
                       f"seed std {spread:.3f})", tuple(ev), table)  # fmt: skip
    verdict = D.every(verdicts)
    reason = (
        "stable, and its final accuracy on held-out seeds vs too low / too high: "
        + " / ".join(v.replace("_", " ") for v in verdicts)
    )
    return Finding(verdict, reason, tuple(ev), table)


_SPEED = ("steps to halfway (the share of the planned steps after which the train loss, averaged "
          "in bins of 2% of the steps, first falls halfway from its start to the final train loss "
          "of the appropriate LR on the picking half; never = 1)")  # fmt: skip
CLAIMS = [
    Claim("too_high_fast_at_first", FAMILY, "Too high an LR makes fast progress at first.",
          PICKING + f"Compare the {_SPEED}, appropriate − too high (positive = too high is "
          "faster): " + D.not_less_rule("the difference", f"{SPEED_MARGIN:g}"), "convergence",
          too_high_fast),
    Claim("too_high_unstable", FAMILY,
          "Too high an LR trains unstably: the loss oscillates, and it may diverge.",
          PICKING + "Supported when a held-out seed diverged at the too-high LR (picked on the "
          "other half, so its own divergence did not pick it); otherwise compare the "
          "oscillation index of the train loss, too high − appropriate: "
          + D.greater_rule("the difference", f"{OSC_MARGIN:g}"), "stability", too_high_unstable),
    Claim("too_high_worse_final", FAMILY, "Too high an LR ends with poor final performance.",
          PICKING + "Final val accuracy (a diverged seed counts as chance), appropriate − too "
          "high: " + D.greater_rule("the difference", f"{D.ACC_MARGIN:g}"), "lr-sensitivity",
          too_high_worse),
    Claim("too_low_slow", FAMILY, "Too low an LR converges slowly.",
          PICKING + f"Compare the {_SPEED}, too low − appropriate: "
          + D.greater_rule("the difference", f"{SPEED_MARGIN:g}"), "convergence", too_low_slow),
    Claim("too_low_stalls", FAMILY, "Too low an LR stalls in a worse solution.",
          PICKING + "Needs both, on the held-out seeds: a clearly worse final val accuracy "
          f"(appropriate − too low, at least {D.ACC_MARGIN:g} and {D.Z:g} standard errors above "
          "0) and a train loss that has stopped falling in most seeds (diagnose's 'still falling' "
          "test over the last 20% of steps). Not supported when it is not clearly worse or its "
          "loss still falls in most seeds (slow, not stalled). Otherwise, or with fewer than 2 "
          "seeds per arm, inconclusive.", "convergence", too_low_stalls),
    Claim("appropriate_best", FAMILY,
          "An appropriate LR trains stably and gives the best final performance.",
          PICKING + "Not supported when the appropriate LR is unstable on the held-out seeds "
          f"(oscillation index above {OSC_MAX:g} or seed std above {SPREAD_MAX:g}). Otherwise its "
          "final val accuracy minus that of the too-low and of the too-high LR, each tested: "
          + D.greater_rule("the difference", f"{D.ACC_MARGIN:g}") + " Both must be supported; "
          "inconclusive when no half of the seeds has both a too-low and a too-high LR.",
          "lr-sensitivity", appropriate_best),
]  # fmt: skip
