"""What a claim check reads and returns: the study's frames in, evidence and a verdict out.

A check is a plain function `Frames -> Finding`. Every number it reports is an `Evidence` row with
its n and spread; the verdict is one of `VERDICTS`, decided by the rules in `decide.py` and stated
in the claim's `rule` text, which the report prints next to the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from lrstudy.report.results import StudyData

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not_supported", "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
VERDICT_TEXT = {
    SUPPORTED: "supported",
    NOT_SUPPORTED: "not supported",
    INCONCLUSIVE: "inconclusive",
}
# Not checked: the study lacks what the claim is about (say, validation accuracy); not in
# VERDICTS, so summaries of studies that check everything read as before.
SKIPPED = "skipped"
VERDICT_TEXT[SKIPPED] = "skipped"


@dataclass(frozen=True)
class Frames:
    """The tidy frames every check reads (the report's own, so claims and page agree).

    trials: one row per trial (`trial_metrics`), plus the runs' `params.*` columns.
    configs: one row per configuration (`diagnose(config_table(trials))`).
    history: long run_id, key, step, value (per-step keys possibly strided).
    range_tests: optimizer, rule, lr, recommended (the study's LR range tests).
    """

    trials: pd.DataFrame
    configs: pd.DataFrame
    history: pd.DataFrame
    range_tests: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["optimizer", "rule", "lr", "recommended"])
    )

    @classmethod
    def from_study(cls, data: StudyData, range_tests: pd.DataFrame | None = None) -> Frames:
        """The frames of a report (`StudyData`), with the runs' params joined onto the trials."""
        params = [c for c in data.results.columns if c.startswith("params.")]
        trials = data.trials
        if params:
            extra = data.results.set_index("run_id")[params]
            trials = trials.join(extra[[c for c in params if c not in trials.columns]], on="run_id")
        if range_tests is None:
            return cls(trials, data.configs, data.history)
        return cls(trials, data.configs, data.history, range_tests)


@dataclass(frozen=True)
class Evidence:
    """One measured number: mean ± spread over n.

    kind says what the ± is: "sd" (sample std of the n values), "se" (standard error of a mean or
    of a difference of two means) or "gsd" (for LRs and other values on a log scale: the mean is
    geometric and the spread a factor, the geometric standard deviation: 0.2 ×/÷ 1.3).
    """

    label: str
    mean: float
    spread: float
    n: int | str  # a count, or "3 vs 3" for a difference of two groups
    kind: str = "sd"
    unit: str = ""
    digits: int = 3

    def text(self) -> str:
        """'0.606 ± 0.016 sd (n=3)', '+0.040 ± 0.012 se (n=3 vs 3)', '— (n=0)'."""
        if self.mean is None or not math.isfinite(self.mean):
            return f"— (n={self.n})"
        if self.kind == "gsd":
            spread = f" ×/÷ {self.spread:.2f} gsd" if math.isfinite(self.spread) else ""
            return f"{self.mean:.3g}{spread} (n={self.n})"
        sign = "+" if self.kind == "se" and self.mean > 0 else ""
        value = f"{sign}{self.mean:.{self.digits}f}"
        unit = f" {self.unit}" if self.unit else ""
        if self.spread is None or not math.isfinite(self.spread):
            return f"{value}{unit} (n={self.n})"
        return f"{value} ± {self.spread:.{self.digits}f}{unit} {self.kind} (n={self.n})"


@dataclass(frozen=True)
class Table:
    """A small table of evidence (the 3 × 3 table of the LR regimes): header and rows of text."""

    caption: str
    head: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Finding:
    """What a check returns: the verdict, one line saying which rule decided it, the evidence."""

    verdict: str
    reason: str
    evidence: tuple[Evidence, ...] = ()
    table: Table | None = None


@dataclass(frozen=True)
class Claim:
    """A registry entry: what is claimed, how it is decided, where to look, and the check."""

    name: str
    family: str  # the catalogue study family, e.g. "LR regimes", "schedules"
    statement: str  # the claim as the common explanations make it
    rule: str  # how the verdict is decided, printed in the report
    figure: str  # id of the report figure that shows the evidence
    check: Callable[[Frames], Finding]


@dataclass(frozen=True)
class ClaimResult:
    """A claim with its computed finding, as the report and the catalogue show it."""

    name: str
    family: str
    statement: str
    rule: str
    figure: str
    verdict: str
    reason: str
    evidence: tuple[Evidence, ...]
    table: Table | None

    @property
    def verdict_text(self) -> str:
        return VERDICT_TEXT[self.verdict]


def inconclusive(reason: str, *evidence: Evidence) -> Finding:
    """The finding of a check that lacks what it needs (a grid, seeds, a swept axis)."""
    return Finding(INCONCLUSIVE, reason, tuple(evidence))
