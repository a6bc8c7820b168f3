"""Too low, appropriate, too high: the 3 × 3 table and the six claims read from it.

The appropriate LR is the configuration the report crowns (`lrstudy.report.best.best_config`).
Within its family (same optimizer, schedule, other axes), "too low" is the nearest lower LR that
the diagnosis calls too low, and "too high" the nearest higher LR it calls too high or diverged:
the mildest LRs on each side that are measurably wrong. Each regime is one configuration, so each
cell is a mean over its seeds, with n and spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrstudy.report.analyze import fmt_value, mean_std
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
from lrstudy.report.diagnose import OSC_MAX, SPREAD_MAX

FAMILY = "LR regimes"
# Speed is a share of the run's steps; 5% of a run is a visible shift on a loss curve and about
# the width of the bins the loss is averaged in (2% of the steps) twice over.
SPEED_MARGIN = 0.05
# Oscillation index (path length / net drop − 1): 0.2 is about the spread between seeds of a
# healthy run; instability pushes it past diagnose's OSC_MAX = 1.
OSC_MARGIN = 0.2
REGIMES = ("too low", "appropriate", "too high")


@dataclass(frozen=True)
class Regime:
    """One regime: its configuration and the per-seed rows of its trials."""

    name: str
    config: str
    lr: float
    verdict: str  # the diagnosis of the configuration
    runs: pd.DataFrame  # trial rows, with columns halfway and acc (diverged → chance)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def n_diverged(self) -> int:
        return int(self.runs["diverged"].sum())

    def values(self, col: str) -> np.ndarray:
        return self.runs[col].to_numpy(dtype=float)


def find_regimes(frames: Frames) -> dict[str, Regime | None] | None:
    """{too low, appropriate, too high} → Regime (None where the grid has no such LR); None
    when no configuration is crowned."""
    best = best_config(frames.trials)
    if best is None:
        return None
    configs = frames.configs
    row = configs[configs["config"] == best.name].iloc[0]
    family = configs[configs["family"] == row["family"]].sort_values("lr")
    low = family[(family["lr"] < row["lr"]) & (family["verdict"] == "too_low")]
    high = family[(family["lr"] > row["lr"]) & family["verdict"].isin(["too_high", "diverged"])]
    # the level to get halfway to: the final train loss the crowned LR reaches (seed mean)
    end = pd.to_numeric(frames.trials.loc[frames.trials["config"] == best.name, "final_train_loss"])
    halfway = halfway_share(frames.trials, frames.history, float(end.mean()))
    trials = frames.trials.assign(
        halfway=frames.trials["run_id"].map(halfway), acc=scored_acc(frames.trials)
    )

    def regime(name: str, cfg: pd.Series | None) -> Regime | None:
        if cfg is None:
            return None
        runs = trials[trials["config"] == cfg["config"]]
        return Regime(name, cfg["config"], float(cfg["lr"]), cfg["verdict"], runs)

    return {
        "too low": regime("too low", low.iloc[-1] if len(low) else None),
        "appropriate": regime("appropriate", row),
        "too high": regime("too high", high.iloc[0] if len(high) else None),
    }


def _cell(values: np.ndarray) -> str:
    m, sd, n = D.mean_sd(values)
    return mean_std(m, sd, n)


def regimes_table(regimes: dict[str, Regime | None]) -> Table:
    """The 3 × 3 table: regime × convergence speed, stability, final performance."""
    rows = []
    for name in REGIMES:
        r = regimes[name]
        if r is None:
            rows.append((name, "no such LR in the grid", "—", "—", "—"))
            continue
        stability = f"osc {_cell(r.values('osc_index'))}; diverged {r.n_diverged}/{r.n}"
        rows.append((f"{name}", f"{fmt_value(r.lr)} ({r.verdict.replace('_', ' ')})",
                     _cell(r.values("halfway")), stability, _cell(r.values("acc"))))  # fmt: skip
    return Table(
        caption="Convergence speed = share of the steps needed to cover half of the drop in "
        "train loss that the appropriate LR achieves (lower = faster; 1 = never); stability = "
        "oscillation index of the train loss (non-diverged seeds; 0 = monotone descent) and "
        "diverged seeds; final performance = final val accuracy (a diverged "
        "seed counts as chance). Mean ± sample std over seeds (n). 'Appropriate' is the crowned "
        "best configuration.",
        head=("regime", "LR (diagnosis)", "convergence speed", "stability", "final performance"),
        rows=tuple(rows),
    )


def _setup(frames: Frames, *needed: str) -> tuple[dict, Table] | Finding:
    regimes = find_regimes(frames)
    if regimes is None:
        return inconclusive("no configuration is crowned (every one has a diverged seed)")
    missing = [n for n in needed if regimes[n] is None]
    if missing:
        return Finding(
            INCONCLUSIVE,
            f"the grid has no {' and no '.join(missing)} LR next to the best "
            f"({regimes['appropriate'].config})",
            table=regimes_table(regimes),
        )
    return regimes, regimes_table(regimes)


def _compare(frames: Frames, a: str, b: str, col: str, label: str, test, margin: float) -> Finding:
    """Verdict of `test(mean(a) − mean(b))` on column `col` of two regimes."""
    got = _setup(frames, a, b)
    if isinstance(got, Finding):
        return got
    regimes, table = got
    ra, rb = regimes[a], regimes[b]
    est, se, na, nb = D.difference(ra.values(col), rb.values(col))
    verdict = test(est, se, margin)
    ev = (
        D.values_evidence(f"{label}, {a} (lr={fmt_value(ra.lr)})", ra.values(col)),
        D.values_evidence(f"{label}, {b} (lr={fmt_value(rb.lr)})", rb.values(col)),
        Evidence(f"difference ({a} − {b})", est, se, f"{na} vs {nb}", kind="se"),
    )
    reason = f"{label}: {a} − {b} = {est:+.3f} ± {se:.3f} se against a margin of {margin:g}"
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
    if len(got.evidence) < 3:  # no too-high LR, or nothing crowned
        return got
    regimes = find_regimes(frames)
    high = regimes["too high"]
    diverged = Evidence("diverged seeds at the too-high LR", high.n_diverged, math.nan, high.n,
                        digits=0)  # fmt: skip
    if high.n_diverged:
        reason = f"{high.n_diverged}/{high.n} seeds diverged at lr={fmt_value(high.lr)}"
        return Finding(SUPPORTED, reason, (diverged, *got.evidence), got.table)
    return Finding(got.verdict, "no seed diverged; " + got.reason, (diverged, *got.evidence),
                   got.table)  # fmt: skip


def too_low_stalls(frames: Frames) -> Finding:
    worse = too_low_worse(frames)
    if len(worse.evidence) < 3:  # no too-low LR, or nothing crowned
        return worse
    low = find_regimes(frames)["too low"]
    falling = int(low.runs["still_falling"].astype(bool).sum())
    ev = (*worse.evidence, Evidence("seeds whose loss still falls at the end", falling, math.nan,
                                    low.n, digits=0))  # fmt: skip
    if worse.verdict != SUPPORTED:
        return Finding(worse.verdict, "final accuracy: " + worse.reason, ev, worse.table)
    if 2 * falling > low.n:
        why = f"worse, but the loss still falls at the end in {falling}/{low.n} seeds: slow, not stalled"
        return Finding(NOT_SUPPORTED, why, ev, worse.table)
    why = f"worse, and the loss has stopped falling in {low.n - falling}/{low.n} seeds"
    return Finding(SUPPORTED, why, ev, worse.table)


def appropriate_best(frames: Frames) -> Finding:
    got = _setup(frames, "too low", "too high")
    if isinstance(got, Finding):
        return got
    regimes, table = got
    best = regimes["appropriate"]
    osc = D.mean_sd(best.values("osc_index"))[0]
    spread = D.mean_sd(best.values("acc"))[1]
    unstable = (math.isfinite(osc) and osc > OSC_MAX) or (
        math.isfinite(spread) and spread > SPREAD_MAX
    )
    ev = [D.values_evidence(f"oscillation index, appropriate (lr={fmt_value(best.lr)})",
                            best.values("osc_index"))]  # fmt: skip
    verdicts = []
    for side in ("too low", "too high"):
        est, se, na, nb = D.difference(best.values("acc"), regimes[side].values("acc"))
        ev.append(
            Evidence(f"final val acc, appropriate − {side}", est, se, f"{na} vs {nb}", kind="se")
        )
        verdicts.append(D.greater(est, se, D.ACC_MARGIN))
    if unstable:
        return Finding(NOT_SUPPORTED, f"the best LR is unstable (osc {osc:.2f}, seed std {spread:.3f})",
                       tuple(ev), table)  # fmt: skip
    verdict = D.every(verdicts)
    reason = "stable, and its final accuracy vs too low / too high: " + " / ".join(
        v.replace("_", " ") for v in verdicts
    )
    return Finding(verdict, reason, tuple(ev), table)


_SPEED = ("steps to halfway (the share of the planned steps after which the train loss, averaged "
          "in bins of 2% of the steps, first falls halfway from its start to the appropriate LR's "
          "final train loss; never = 1)")  # fmt: skip
_PICK = ("LRs as in the 3 × 3 table: appropriate = the crowned best configuration; too low / too "
         "high = the nearest LR of its family that the diagnosis calls too low / too high or "
         "diverged. ")  # fmt: skip
CLAIMS = [
    Claim("too_high_fast_at_first", FAMILY, "Too high an LR makes fast progress at first.",
          _PICK + f"Compare the {_SPEED}, appropriate − too high (positive = too high is "
          "faster): " + D.not_less_rule("the difference", f"{SPEED_MARGIN:g}"), "convergence",
          too_high_fast),
    Claim("too_high_unstable", FAMILY,
          "Too high an LR trains unstably: the loss oscillates, and it may diverge.",
          _PICK + "Supported when a seed diverged at the too-high LR; otherwise compare the "
          "oscillation index of the train loss, too high − appropriate: "
          + D.greater_rule("the difference", f"{OSC_MARGIN:g}"), "stability", too_high_unstable),
    Claim("too_high_worse_final", FAMILY, "Too high an LR ends with poor final performance.",
          _PICK + "Final val accuracy (a diverged seed counts as chance), appropriate − too high: "
          + D.greater_rule("the difference", f"{D.ACC_MARGIN:g}"), "lr-sensitivity", too_high_worse),
    Claim("too_low_slow", FAMILY, "Too low an LR converges slowly.",
          _PICK + f"Compare the {_SPEED}, too low − appropriate: "
          + D.greater_rule("the difference", f"{SPEED_MARGIN:g}"), "convergence", too_low_slow),
    Claim("too_low_stalls", FAMILY, "Too low an LR stalls in a worse solution.",
          _PICK + "Needs both: a clearly worse final val accuracy (appropriate − too low, "
          f"at least {D.ACC_MARGIN:g} and {D.Z:g} standard errors above 0) and a train loss that "
          "has stopped falling in most seeds (diagnose's 'still falling' test over the last 20% "
          "of steps). Not supported when it is not clearly worse or its loss still falls in most "
          "seeds (slow, not stalled). Otherwise, or with fewer than 2 seeds, inconclusive.",
          "convergence", too_low_stalls),
    Claim("appropriate_best", FAMILY,
          "An appropriate LR trains stably and gives the best final performance.",
          _PICK + f"Not supported when the best LR is unstable (oscillation index above {OSC_MAX:g} "
          f"or seed std above {SPREAD_MAX:g}). Otherwise its final val accuracy minus that of the "
          "too-low and of the too-high LR, each tested: "
          + D.greater_rule("the difference", f"{D.ACC_MARGIN:g}") + " Both must be supported; "
          "inconclusive when the grid has no too-low or no too-high LR.", "lr-sensitivity",
          appropriate_best),
]  # fmt: skip
