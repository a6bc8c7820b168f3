"""The metric that ranks a study's configurations, as the report reads it from MLflow.

A study names it (`StudySpec.rank_metric`) and every parent and trial run it writes carries it as
tags `lrstudy.metric` / `lrstudy.metric_mode`. Runs without those tags (studies written before
them, plugin runs) are ranked by validation accuracy, higher is better: what every study was
ranked by until then. A trial's value is the metric's final value: MLflow's latest value of
`metrics.<name>` (the value at the highest step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from lrstudy import names as N


@dataclass(frozen=True)
class RankMetric:
    """A metric name as logged, and whether higher ('max') or lower ('min') is better."""

    name: str = N.VAL_ACC
    mode: str = "max"

    @property
    def is_val_acc(self) -> bool:
        """The classic ranking (final val accuracy, max): the report's accuracy-specific rules
        (2 points of accuracy, the seed-spread limit, 'at chance') apply to it alone."""
        return self.name == N.VAL_ACC and self.mode == "max"

    @property
    def draws_own_curve(self) -> bool:
        """Whether the convergence figure may draw this metric's history where a study without
        val/acc has nothing (a module's val_acc, val_loss): not val/acc itself, and not a train
        loss, which the figure's left column shows already."""
        return self.name not in (N.VAL_ACC, N.TRAIN_LOSS, N.TRAIN_LOSS_EPOCH)

    def curve_key(self, history_keys: set[str]) -> tuple[str, str] | None:
        """(metric key, axis label) of the convergence figure's right column: val/acc when
        logged, else this metric's own history; None: the train loss alone."""
        if N.VAL_ACC in history_keys:
            return N.VAL_ACC, "val accuracy"
        if self.draws_own_curve and self.name in history_keys:
            return self.name, f"{self.name} ({self.direction})"
        return None

    @property
    def sign(self) -> float:
        """+1 when higher is better, -1 when lower is: `sign * value` is a higher-is-better score."""
        return 1.0 if self.mode == "max" else -1.0

    @property
    def direction(self) -> str:
        return "higher is better" if self.mode == "max" else "lower is better"

    @property
    def label(self) -> str:
        """'final val acc' for the classic ranking, else 'final <name as logged>'."""
        return "final val acc" if self.is_val_acc else f"final {self.name}"

    def fmt(self, value: float | None) -> str:
        """A value of this metric: 3 decimals for accuracy, else 3 significant digits."""
        if value is None or not math.isfinite(value):
            return "—"
        return f"{value:.3f}" if self.is_val_acc else f"{value:.3g}"

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b` under this metric's mode."""
        return a > b if self.mode == "max" else a < b


DEFAULT = RankMetric()


def _mode(value) -> str:
    return "min" if str(value).strip().lower() == "min" else "max"


def metric_of_tags(tags: dict | None) -> RankMetric | None:
    """The ranking metric a run's tags name, or None when they name none."""
    name = (tags or {}).get(N.TAG_METRIC)
    if not isinstance(name, str) or not name:
        return None
    return RankMetric(name, _mode((tags or {}).get(N.TAG_METRIC_MODE, "max")))


def study_metric(runs: pd.DataFrame, parent: dict | None = None) -> RankMetric:
    """The ranking metric of a study: the newest parent run's tags, else the most common one
    among the trial runs' tags, else val/acc, max."""
    found = metric_of_tags((parent or {}).get("tags"))
    if found is not None:
        return found
    col, mode_col = f"tags.{N.TAG_METRIC}", f"tags.{N.TAG_METRIC_MODE}"
    if col in runs.columns and runs[col].notna().any():
        modes = runs[mode_col] if mode_col in runs.columns else pd.Series("max", index=runs.index)
        pairs = pd.Series(list(zip(runs[col], modes.fillna("max"), strict=True)))[
            runs[col].notna().to_numpy()
        ]
        name, mode = pairs.value_counts(sort=True).index[0]
        return RankMetric(str(name), _mode(mode))
    return DEFAULT


def logged_metric_names(runs: pd.DataFrame) -> list[str]:
    """Every metric name some run of the frame logged (its latest value exists)."""
    return sorted(
        c.removeprefix("metrics.")
        for c in runs.columns
        if c.startswith("metrics.") and runs[c].notna().any()
    )


def missing_metric_note(metric: RankMetric, runs: pd.DataFrame) -> str | None:
    """'The ranking metric val_loss was never logged …' when no run logged it, else None."""
    if metric.is_val_acc:
        return None  # the classic ranking has its own fallbacks (last val/acc, train loss)
    col = f"metrics.{metric.name}"
    if col in runs.columns and runs[col].notna().any():
        return None
    names = ", ".join(logged_metric_names(runs)) or "none"
    return (
        f"The ranking metric {metric.name!r} ({metric.mode}) was never logged by any trial: "
        f"nothing is ranked. Metrics the trials logged: {names}."
    )
