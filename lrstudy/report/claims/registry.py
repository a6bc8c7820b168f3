"""The registry of claim checks: name → `Claim`, and running the ones a study declares.

A study names its claims in its file (`claims: [too_high_unstable, ...]`); the spec checks the
names against `claim_names()`, and the report runs `run_claims` on its own frames. Adding a claim
= one `Claim(...)` in the module of its family, listed here.
"""

from __future__ import annotations

from collections.abc import Iterable

from lrstudy.report.claims import (
    adaptive,
    axis_shift,
    data_size,
    generalization,
    gradients,
    layers,
    lr_free,
    range_test,
    regimes,
    schedules,
)
from lrstudy.report.claims.evidence import INCONCLUSIVE, SKIPPED, Claim, ClaimResult, Frames

CLAIMS: dict[str, Claim] = {
    c.name: c
    for module in (
        regimes,
        schedules,
        adaptive,
        axis_shift,
        data_size,
        gradients,
        generalization,
        layers,
        range_test,
        lr_free,
    )  # fmt: skip
    for c in module.CLAIMS
}


# Claims about gradients, or about where the best LR lies (whatever ranks it): checked on any
# study. Every other claim reads validation accuracy (its margins are points of accuracy).
ACCURACY_FREE = {c.name for c in (*gradients.CLAIMS, *range_test.CLAIMS)} | {
    "adaptive_step_near_adam_best"
}


def accuracy_missing(frames: Frames) -> str | None:
    """Why a study cannot have its accuracy claims checked, or None when it can: it logged no
    validation accuracy, or it is ranked by another metric (its scores are not accuracies)."""
    t = frames.trials
    if "metric" in t.columns and len(t):
        name, mode = str(t["metric"].iloc[0]), str(t["metric_mode"].iloc[0])
        if (name, mode) != ("val/acc", "max"):
            return (f"needs validation accuracy as the ranking metric; this study is ranked by "
                    f"{name} ({mode})")  # fmt: skip
    if "final_val_acc" not in t.columns or not t["final_val_acc"].astype(float).notna().any():
        return "needs validation accuracy; this study logged none"
    return None


def claim_names() -> list[str]:
    """Every registered claim name, in registry order (families together)."""
    return list(CLAIMS)


def run_claims(names: Iterable[str], frames: Frames) -> list[ClaimResult]:
    """Check each named claim on the frames. A name this lrstudy does not know (a study written
    by another version) is shown as inconclusive rather than failing the report."""
    out = []
    missing = accuracy_missing(frames)
    for name in names:
        claim = CLAIMS.get(name)
        if claim is None:
            out.append(ClaimResult(name, "unknown", name, "", "", INCONCLUSIVE,
                                   "not a claim this lrstudy version knows", (), None))  # fmt: skip
            continue
        if missing and claim.name not in ACCURACY_FREE:
            out.append(ClaimResult(claim.name, claim.family, claim.statement, claim.rule,
                                   claim.figure, SKIPPED, missing, (), None))  # fmt: skip
            continue
        f = claim.check(frames)
        out.append(ClaimResult(claim.name, claim.family, claim.statement, claim.rule, claim.figure,
                               f.verdict, f.reason, f.evidence, f.table))  # fmt: skip
    return out
