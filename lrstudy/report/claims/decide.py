"""How a verdict is decided from an estimate with its standard error: the rules every check uses.

An effect is *clear* when it lies more than Z standard errors from the line it is compared with.
A claim is supported when the effect it predicts is clear and at least as large as a margin that
matters in practice; not supported when the data clearly rule that out (the effect is clearly
smaller than the margin, or goes the other way); inconclusive otherwise, and always when a group
has fewer than MIN_N values (no spread, so no way to tell an effect from seed noise).

Z = 2 is a plain rule of thumb, not a t quantile: with n = 2–3 seeds it is lenient, which is why
every page shows n and the spread next to the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from lrstudy.report.claims.evidence import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Evidence

Z = 2.0
MIN_N = 2
# One point of accuracy: the smallest difference between two set-ups that a practitioner acts on.
ACC_MARGIN = 0.01


def finite(values: Iterable[float]) -> np.ndarray:
    """The finite values, as floats."""
    a = np.asarray(list(values), dtype=float)
    return a[np.isfinite(a)]


def mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std (NaN for n < 2), n) of the finite values."""
    a = finite(values)
    if len(a) == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else math.nan, len(a)


def mean_se(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, standard error (NaN for n < 2), n) of the finite values."""
    m, sd, n = mean_sd(values)
    return m, sd / math.sqrt(n) if n > 1 else math.nan, n


def difference(a: Iterable[float], b: Iterable[float]) -> tuple[float, float, int, int]:
    """(mean(a) − mean(b), Welch standard error, n_a, n_b) over the finite values."""
    ma, sa, na = mean_sd(a)
    mb, sb, nb = mean_sd(b)
    if na < MIN_N or nb < MIN_N:
        return ma - mb, math.nan, na, nb
    return ma - mb, math.sqrt(sa**2 / na + sb**2 / nb), na, nb


def greater(est: float, se: float, margin: float) -> str:
    """Claim: the effect `est` is positive and at least `margin`."""
    if not (math.isfinite(est) and math.isfinite(se)):
        return INCONCLUSIVE
    if est >= margin and est - Z * se > 0:
        return SUPPORTED
    if est + Z * se < margin:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def greater_rule(what: str, margin: str) -> str:
    """The text of `greater` for a claim's rule."""
    return (
        f"supported when {what} is at least {margin} and more than {Z:g} standard errors above 0; "
        f"not supported when it is more than {Z:g} standard errors below {margin}; otherwise, "
        f"or with fewer than {MIN_N} values per group, inconclusive."
    )


def not_less(est: float, se: float, margin: float) -> str:
    """Claim: the effect `est` is not meaningfully negative (at least −margin)."""
    if not (math.isfinite(est) and math.isfinite(se)):
        return INCONCLUSIVE
    if est - Z * se > -margin:
        return SUPPORTED
    if est + Z * se < -margin:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def not_less_rule(what: str, margin: str) -> str:
    """The text of `not_less` for a claim's rule."""
    return (
        f"supported when {what} is more than −{margin} by over {Z:g} standard errors; not "
        f"supported when it is below −{margin} by over {Z:g} standard errors; otherwise, or with "
        f"fewer than {MIN_N} values per group, inconclusive."
    )


def majority(verdicts: Sequence[str]) -> str:
    """Several comparisons, one claim: supported when more than half are supported, not
    supported when more than half are not, otherwise inconclusive."""
    if not verdicts:
        return INCONCLUSIVE
    for v in (SUPPORTED, NOT_SUPPORTED):
        if 2 * sum(x == v for x in verdicts) > len(verdicts):
            return v
    return INCONCLUSIVE


MAJORITY_RULE = (
    "over several comparisons: supported when more than half are supported, not supported when "
    "more than half are not, otherwise inconclusive."
)


def every(verdicts: Sequence[str]) -> str:
    """A claim about every case: supported when all are, not supported when any is not."""
    if not verdicts:
        return INCONCLUSIVE
    if NOT_SUPPORTED in verdicts:
        return NOT_SUPPORTED
    return SUPPORTED if all(v == SUPPORTED for v in verdicts) else INCONCLUSIVE


EVERY_RULE = (
    "over every case: supported when all are supported, not supported when any is not, "
    "otherwise inconclusive."
)


def diff_evidence(label: str, a: Iterable[float], b: Iterable[float], digits: int = 3) -> Evidence:
    """`difference(a, b)` as an evidence row (± is its standard error)."""
    est, se, na, nb = difference(a, b)
    return Evidence(label, est, se, f"{na} vs {nb}", kind="se", digits=digits)


def values_evidence(
    label: str, values: Iterable[float], unit: str = "", digits: int = 3
) -> Evidence:
    """Mean ± sample std (n) of the finite values."""
    m, sd, n = mean_sd(values)
    return Evidence(label, m, sd, n, unit=unit, digits=digits)


def estimate_evidence(
    label: str, values: Iterable[float], unit: str = "", digits: int = 3
) -> Evidence:
    """Mean ± standard error (n) of per-seed estimates (slopes, paired differences)."""
    m, se, n = mean_se(values)
    return Evidence(label, m, se, n, kind="se", unit=unit, digits=digits)


def near(est: float, se: float, target: float, tol: float) -> str:
    """Claim: the effect `est` is about `target`, within `tol`."""
    if not (math.isfinite(est) and math.isfinite(se)):
        return INCONCLUSIVE
    off = abs(est - target)
    if off > tol + Z * se:
        return NOT_SUPPORTED
    if off <= tol and Z * se <= tol:
        return SUPPORTED
    return INCONCLUSIVE


def near_rule(what: str, target: str, tol: str) -> str:
    """The text of `near` for a claim's rule."""
    return (
        f"supported when {what} is within {tol} of {target} and {Z:g} standard errors are at most "
        f"{tol}; not supported when it is further than {tol} + {Z:g} standard errors from "
        f"{target}; otherwise, or with fewer than {MIN_N} seeds, inconclusive."
    )


def geo_evidence(label: str, values: Iterable[float]) -> Evidence:
    """Geometric mean ×/÷ geometric std (n) of positive values such as LRs."""
    a = finite(values)
    m, sd, n = mean_sd(np.log10(a[a > 0]))
    return Evidence(label, 10**m if n else math.nan, 10**sd if n > 1 else math.nan, n, kind="gsd")
