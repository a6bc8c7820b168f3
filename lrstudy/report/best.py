"""The best configuration of a study: one meaning, used by the report, the diagnosis and the CLI.

Best = among the configurations (a trial without its seed; tag lrstudy.config_key) of which no
seed diverged, the one with the best seed-mean final value of the study's ranking metric
(`lrstudy.report.metric`: final val accuracy, highest, unless the study names another metric and
its direction); shown as mean ± sample std (n seeds). A configuration with a diverged seed is
never best: the mean of its surviving seeds hides a failure a user would hit one run in n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrstudy.report.metric import DEFAULT, RankMetric


@dataclass(frozen=True)
class BestConfig:
    """The winning configuration and the numbers that crowned it."""

    name: str  # display label, e.g. "sgd · cosine+warmup · lr=0.05"
    config_key: str  # value of tag lrstudy.config_key (shared by the configuration's seeds)
    mean: float  # seed-mean final value of the ranking metric
    std: float  # sample std over the seeds (NaN for n = 1)
    n: int  # seeds in the mean
    metric: RankMetric = DEFAULT  # what ranked it
    # ' (the highest LR tried: the optimum may lie higher)' when the best LR is at an end of its
    # family's LR grid (`edge_note`), else ''
    edge: str = ""

    def text(self) -> str:
        """'sgd · constant · lr=0.05: final val acc 0.192 ± 0.012 (n=2)', or for another metric
        'adam · lr=0.001: final val_loss 0.312 ± 0.01 (n=2)'."""
        m = self.metric
        spread = f" ± {m.fmt(self.std)}" if math.isfinite(self.std) else ""
        return f"{self.name}: {m.label} {m.fmt(self.mean)}{spread} (n={self.n})"


def edge_note(lr: float, family_lrs) -> str:
    """' (the highest LR tried: the optimum may lie higher)' (or lowest/lower) when `lr` is an
    end of its family's LR grid of more than one LR; '' otherwise (the report's diagnosis and the
    CLI's best line both say it with this text)."""
    lrs = pd.Series(family_lrs, dtype=float).dropna().unique()
    if len(lrs) < 2 or lr is None or not np.isfinite(lr):
        return ""
    if lr == lrs.max():
        return " (the highest LR tried: the optimum may lie higher)"
    if lr == lrs.min():
        return " (the lowest LR tried: the optimum may lie lower)"
    return ""


def frame_metric(trials: pd.DataFrame) -> tuple[RankMetric, str]:
    """(ranking metric, value column) of a per-trial frame: columns metric / metric_mode /
    metric_value when it has them (the report's and `load_results`' frames), else final val
    accuracy, max (frames from before the ranking metric existed)."""
    if "metric_value" in trials.columns and "metric" in trials.columns and len(trials):
        return RankMetric(
            str(trials["metric"].iloc[0]), str(trials["metric_mode"].iloc[0])
        ), "metric_value"
    return DEFAULT, "final_val_acc"


def pick_best(means: pd.Series) -> object | None:
    """Index label of the highest finite value of `means`; ties go to the first label in sorted
    order, so every caller crowns the same configuration. None when no value is finite."""
    finite = means[means.notna() & (means != float("inf")) & (means != float("-inf"))]
    if finite.empty:
        return None
    top = finite[finite == finite.max()]
    return sorted(top.index, key=str)[0]


def best_config(trials: pd.DataFrame) -> BestConfig | None:
    """The best configuration of a per-trial frame (one row per trial).

    Args:
        trials: needs columns `config` (label), `config_key`, `diverged` and the value: the
            ranking metric's `metric_value` with its name and mode in columns `metric` and
            `metric_mode`, else `final_val_acc` (higher is better); `lrstudy.load_results(...)`
            and the report's trial table have all of them. With `lr` (and `family`) columns the
            result says when the best LR is an end of its family's grid (`edge`).
    Returns:
        BestConfig, or None when no configuration without a diverged seed has a final value.
        With a `pruned` column, configurations with a seed stopped early by successive halving
        are not candidates either (their values are from an earlier epoch); their LRs still
        count as tried for the edge note.
    """
    metric, col = frame_metric(trials)
    value = pd.to_numeric(trials[col], errors="coerce").astype(float)
    value = value.where(value.abs() != float("inf"))
    g = trials.assign(_v=value, _s=metric.sign * value).groupby("config", sort=True)
    alive = ~g["diverged"].any()
    if "pruned" in trials.columns:  # stopped early by successive halving: a partial value
        alive &= ~g["pruned"].any()
    name = pick_best(g["_s"].mean()[alive])
    if name is None:
        return None
    rows = g.get_group(name)
    values = rows["_v"].dropna()
    edge = ""
    if "lr" in trials.columns:
        fam = trials["family"] == rows["family"].iloc[0] if "family" in trials.columns else True
        lrs = pd.to_numeric(
            trials.loc[fam, "lr"] if fam is not True else trials["lr"], errors="coerce"
        )
        edge = edge_note(float(pd.to_numeric(rows["lr"], errors="coerce").iloc[0]), lrs)
    return BestConfig(
        name=str(name),
        config_key=str(rows["config_key"].iloc[0]),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
        n=int(len(values)),
        metric=metric,
        edge=edge,
    )
