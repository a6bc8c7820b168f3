"""The best configuration of a study: one meaning, used by the report, the diagnosis and the CLI.

Best = among the configurations (a trial without its seed; tag lrstudy.config_key) of which no
seed diverged, the one with the highest seed-mean final val accuracy; shown as mean ± sample std
(n seeds). A configuration with a diverged seed is never best: the mean of its surviving seeds
hides a failure a user would hit one run in n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class BestConfig:
    """The winning configuration and the numbers that crowned it."""

    name: str  # display label, e.g. "sgd · cosine+warmup · lr=0.05"
    config_key: str  # value of tag lrstudy.config_key (shared by the configuration's seeds)
    mean: float  # seed-mean final val accuracy
    std: float  # sample std over the seeds (NaN for n = 1)
    n: int  # seeds in the mean

    def text(self) -> str:
        """'sgd · constant · lr=0.05: final val acc 0.192 ± 0.012 (n=2)'"""
        spread = f" ± {self.std:.3f}" if math.isfinite(self.std) else ""
        return f"{self.name}: final val acc {self.mean:.3f}{spread} (n={self.n})"


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
        trials: needs columns `config` (label), `config_key`, `final_val_acc` and `diverged`;
            `lrstudy.load_results(...)` and the report's trial table both have them.
    Returns:
        BestConfig, or None when no configuration without a diverged seed has a final val
        accuracy.
    """
    acc = pd.to_numeric(trials["final_val_acc"], errors="coerce").astype(float)
    acc = acc.where(acc.abs() != float("inf"))
    g = trials.assign(_acc=acc).groupby("config", sort=True)
    alive = ~g["diverged"].any()
    means = g["_acc"].mean()[alive]
    name = pick_best(means)
    if name is None:
        return None
    accs = g.get_group(name)["_acc"].dropna()
    return BestConfig(
        name=str(name),
        config_key=str(g.get_group(name)["config_key"].iloc[0]),
        mean=float(accs.mean()),
        std=float(accs.std(ddof=1)) if len(accs) > 1 else float("nan"),
        n=int(len(accs)),
    )
