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
    range_test,
    regimes,
    schedules,
)
from lrstudy.report.claims.evidence import INCONCLUSIVE, Claim, ClaimResult, Frames

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
    )  # fmt: skip
    for c in module.CLAIMS
}


def claim_names() -> list[str]:
    """Every registered claim name, in registry order (families together)."""
    return list(CLAIMS)


def run_claims(names: Iterable[str], frames: Frames) -> list[ClaimResult]:
    """Check each named claim on the frames. A name this lrstudy does not know (a study written
    by another version) is shown as inconclusive rather than failing the report."""
    out = []
    for name in names:
        claim = CLAIMS.get(name)
        if claim is None:
            out.append(ClaimResult(name, "unknown", name, "", "", INCONCLUSIVE,
                                   "not a claim this lrstudy version knows", (), None))  # fmt: skip
            continue
        f = claim.check(frames)
        out.append(ClaimResult(claim.name, claim.family, claim.statement, claim.rule, claim.figure,
                               f.verdict, f.reason, f.evidence, f.table))  # fmt: skip
    return out
