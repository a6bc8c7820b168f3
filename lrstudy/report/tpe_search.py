"""The Search section of a TPE study: what Optuna's TPESampler sampled, in order, and what it found.

Each configuration ("slot") is sampled when a worker claims it and recorded on its runs (tag
`lrstudy.sampled`: the slot number, whether it was a random start-up draw or the model's pick).
The section lists the slots in sampling order with their seed-mean value of the ranking metric,
the best found so far after each one, and the budget in trial-steps. Built from the finished
runs and the ones successive halving stopped (`StudyRuns.runs`, `StudyRuns.pruned`). No torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrstudy import names as N
from lrstudy.report.analyze import trial_table
from lrstudy.report.metric import RankMetric
from lrstudy.report.search import as_float, json_dict

POINT_COLUMNS = ["slot", "family", "config", "lr", "value", "startup", "stopped", "diverged"]


@dataclass(frozen=True)
class TpeSummary:
    trials: int  # configurations the search samples (search.trials)
    seeds: int  # seeds each configuration trains with
    search_seed: int | None
    startup: int | None  # random start-up draws before the model takes over
    points: pd.DataFrame  # one row per sampled slot, in slot order (POINT_COLUMNS + best_so_far)
    steps_used: float  # trial-steps trained (stopped trials up to their stop)
    metric: RankMetric

    @property
    def best(self) -> pd.Series | None:
        """The best slot (seed-mean value; diverged slots never win), or None."""
        ok = self.points[~self.points["diverged"] & np.isfinite(self.points["value"])]
        if ok.empty:
            return None
        return ok.loc[(ok["value"] * self.metric.sign).idxmax()]

    def lines(self) -> list[str]:
        n = len(self.points)
        startup = int(self.points["startup"].sum())
        seed = f", search seed {self.search_seed}" if self.search_seed is not None else ""
        out = [
            f"TPE (Optuna's TPESampler{seed}): {n} of {self.trials} configurations sampled, "
            f"each when a worker claimed it, told every result the store held; {startup} random "
            f"start-up draw{'s' if startup != 1 else ''}, then {n - startup} from the model of "
            f"what worked. Each configuration trains with {self.seeds} seed"
            f"{'s' if self.seeds != 1 else ''} (the value is their mean).",
        ]
        best = self.best
        if best is not None:
            after = n - 1 - int(best["slot"])
            out.append(
                f"Best: configuration #{int(best['slot']) + 1} of {n}, {best['config']}: "
                f"{self.metric.label} {self.metric.fmt(float(best['value']))} "
                f"({self.metric.direction})"
                + (f"; none of the {after} sampled after it beat it." if after else ".")
            )
        stopped, diverged = int(self.points["stopped"].sum()), int(self.points["diverged"].sum())
        extra = [f"{stopped} stopped by successive halving"] if stopped else []
        extra += [f"{diverged} configuration{'s' if diverged != 1 else ''} with a diverged seed (an x in the figure)"] if diverged else []  # fmt: skip
        out.append(
            f"Budget: {self.steps_used:,.0f} trial-steps"
            + (f"; {', '.join(extra)}." if extra else ".")
        )
        return out


def tpe_summary(sr, trials: pd.DataFrame, metric: RankMetric) -> TpeSummary | None:
    """The TPE summary of a study, or None when it did not search with TPE.

    Args:
        sr: `StudyRuns` (its parent params, finished runs and stopped runs).
        trials: the report's trial table of the finished runs (`analyze.trial_table` with the
            ranking metric filled in), for each trial's family, LR and metric value.
        metric: the study's ranking metric.
    """
    params = (getattr(sr, "parent", None) or {}).get("params", {})
    if params.get("search") != "tpe":
        return None
    settings = json_dict(params.get("tpe")) or {}
    col = f"tags.{N.TAG_SAMPLED}"
    rows = []
    used = 0.0
    finished = trials.set_index("run_id")
    for frame, stopped in ((sr.runs, False), (getattr(sr, "pruned", pd.DataFrame()), True)):
        if frame is None or frame.empty or col not in frame.columns:
            continue
        table = finished if not stopped else trial_table(frame).set_index("run_id")
        for _, r in frame.iterrows():
            record = json_dict(r.get(col))
            if record is None or r["run_id"] not in table.index:
                continue
            t = table.loc[r["run_id"]]
            if stopped:
                step = as_float(r.get(f"tags.{N.TAG_PRUNED_STEP}"))
                used += step if math.isfinite(step) else 0.0
                value = math.nan
            else:
                total = as_float(t.get("total_steps"))
                used += total if math.isfinite(total) else 0.0
                value = as_float(t.get("metric_value"))
            rows.append((int(record.get("slot", -1)), t["family"], t["config"], float(t["lr"]),
                         value, record.get("source") == "startup", stopped,
                         bool(t.get("diverged", False))))  # fmt: skip
    if not rows:
        return None
    seeds_ = pd.DataFrame(rows, columns=POINT_COLUMNS)
    points = seeds_.groupby("slot", sort=True).agg(
        family=("family", "first"), config=("config", "first"), lr=("lr", "first"),
        value=("value", "mean"), startup=("startup", "first"), stopped=("stopped", "all"),
        diverged=("diverged", "any"),
    ).reset_index()  # fmt: skip
    score = (points["value"] * metric.sign).where(~points["diverged"])
    best_score = score.cummax().ffill()  # a diverged or stopped slot keeps the best so far
    points["best_so_far"] = best_score * metric.sign
    return TpeSummary(
        trials=int(settings.get("trials", len(points))),
        seeds=int(seeds_.groupby("slot").size().max()),
        search_seed=settings.get("seed"),
        startup=settings.get("startup"),
        points=points,
        steps_used=used,
        metric=metric,
    )
