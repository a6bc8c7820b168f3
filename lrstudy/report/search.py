"""The Search section: what successive halving tried, where it stopped what, what it cost.

Built from the finished trial runs (`StudyRuns.runs`) and the stopped ones (`StudyRuns.pruned`),
with the rung epochs and eta from the parent run's `halving` param. The budget is counted in
trial-steps (optimizer steps summed over trials) against the full grid's: every trial of the
study trained to the last epoch. No torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from lrstudy import names as N
from lrstudy.report.analyze import fmt_value, trial_table


@dataclass(frozen=True)
class SearchSummary:
    eta: float
    rungs: list[int]  # epochs after which configurations were judged
    epochs: int
    stopped: dict[int, int]  # rung epoch -> trials stopped there
    finished: int  # trials trained to the last epoch (diverged ones included)
    steps_used: float  # trial-steps trained
    steps_full: float  # trial-steps of the full grid (every trial to the end)
    points: pd.DataFrame  # one row per trial: family, lr, epochs_trained, stopped, value

    @property
    def saving(self) -> float:
        """How many times less compute than the full grid (inf when nothing trained)."""
        return self.steps_full / self.steps_used if self.steps_used else math.inf

    def lines(self) -> list[str]:
        rung_text = ", ".join(str(r) for r in self.rungs)
        stops = "; ".join(f"{n} at epoch {r}" for r, n in sorted(self.stopped.items()) if n)
        total = self.finished + sum(self.stopped.values())
        return [
            f"Successive halving (asynchronous, as ASHA), eta {fmt_value(self.eta)}: configurations "
            f"were judged after epochs {rung_text} of {self.epochs}, and went on only while "
            f"their seed-mean metric was in the top 1/{fmt_value(self.eta)} of those that had "
            "reached that rung.",
            f"{total} trials: {self.finished} trained to the end, "
            f"{sum(self.stopped.values())} stopped ({stops or 'none'}).",
            f"Budget: {self.steps_used:,.0f} trial-steps of the full grid's "
            f"{self.steps_full:,.0f} ({self.saving:.1f}× less compute).",
        ]


def search_summary(sr, trials: pd.DataFrame) -> SearchSummary | None:
    """The halving summary of a study, or None when it did not use successive halving.

    Args:
        sr: `StudyRuns` (its parent params, finished runs and pruned runs).
        trials: the report's trial table of the finished runs (`analyze.trial_table`), for each
            trial's family, LR and value of the ranking metric.
    """
    params = (getattr(sr, "parent", None) or {}).get("params", {})
    halving = json_dict(params.get("halving"))
    if not halving:
        return None
    epochs = int(float(params.get("epochs", 0)) or 0)
    rungs = [int(r) for r in halving.get("rungs", [])]
    pruned = sr.pruned
    stopped = {r: 0 for r in rungs}
    rows = []
    used = full = 0.0
    for _, r in trials.iterrows():
        total = as_float(r.get("total_steps"))
        if math.isfinite(total):
            used, full = used + total, full + total
        value = as_float(r.get("metric_value"))
        if not math.isfinite(value):
            value = as_float(r.get("final_val_acc"))
        rows.append((r["family"], float(r["lr"]), epochs, False, value))
    if len(pruned):
        # labelled as the finished trials are (families depend on the axes swept in all runs)
        both = trial_table(pd.concat([sr.runs, pruned], ignore_index=True))
        labels = both.set_index("run_id")
        for _, r in pruned.iterrows():
            rung = int(float(r.get(f"tags.{N.TAG_PRUNED_RUNG}")))
            stopped[rung] = stopped.get(rung, 0) + 1
            step = as_float(r.get(f"tags.{N.TAG_PRUNED_STEP}"))
            total = as_float(r.get("params.total_steps"))
            if math.isfinite(step) and math.isfinite(total):
                used, full = used + step, full + total
            decision = json_dict(r.get(f"tags.{N.TAG_RUNG_PREFIX}{rung}")) or {}
            label = labels.loc[r["run_id"]]
            rows.append((label["family"], float(label["lr"]), rung, True,
                         as_float(decision.get("value"))))  # fmt: skip
    points = pd.DataFrame(rows, columns=["family", "lr", "epochs_trained", "stopped", "value"])
    return SearchSummary(float(halving.get("eta", 3)), rungs, epochs, stopped,
                         len(trials), used, full, points)  # fmt: skip


def json_dict(value) -> dict | None:
    """A param or tag holding a JSON object, parsed; None for anything else."""
    if isinstance(value, dict):
        return value
    try:
        out = json.loads(value) if value else None
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


def as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
