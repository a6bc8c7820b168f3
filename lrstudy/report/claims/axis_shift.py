"""The best LR along another axis: momentum shifts it, batch size scales it.

Per seed and axis value, the best LR (`peak_lr`: the grid's argmax refined by a parabola in log LR);
per seed, the slope of log10(best LR) against the axis on the scale its rule is linear in. The
seeds' slopes give the estimate and its standard error.

- Momentum: with torch's SGD momentum a steady gradient moves the weights by lr / (1 − β) per
  step, so the best LR should scale like (1 − β): slope 1 against log10(1 − β).
- Batch size: the linear scaling rule says the best LR grows in proportion to the batch size:
  slope 1 against log10(batch size); the square-root rule says 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lrstudy.report.claims import decide as D
from lrstudy.report.claims.evidence import (
    INCONCLUSIVE,
    Claim,
    Evidence,
    Finding,
    Frames,
    inconclusive,
)
from lrstudy.report.claims.measures import axis_peaks, groups, peak_slopes

MOMENTUM_TOL = 0.5  # slope 0.5–1.5: a shift of the right direction and roughly the right size
GROWTH_MARGIN = 0.25  # LR ∝ batch^0.25 is the weakest growth worth the name
LINEAR_TOL = 0.25  # 0.75–1.25: linear, and clearly apart from the square-root rule's 0.5


def _finding(frames: Frames, axis: str, x_of: Callable[[float], float], what: str, test) -> Finding:
    verdicts, ev, lines = [], [], []
    for name, g in groups(frames.trials):
        peaks = axis_peaks(g, axis)
        if len(peaks) < 2:
            continue
        for value, seeds in peaks.items():
            edge = sum(e for _, e in seeds.values())
            ev.append(D.geo_evidence(f"{name}: best LR at {axis}={value:g} ({edge} at the grid's "
                                     "edge)", [lr for lr, _ in seeds.values()]))  # fmt: skip
        slopes = peak_slopes(peaks, x_of)
        est, se, n = D.mean_se(slopes)
        ev.append(Evidence(f"{name}: slope of log10(best LR) vs {what}", est, se, n, kind="se",
                           digits=2))  # fmt: skip
        edges = sum(e for seeds in peaks.values() for _, e in seeds.values())
        if 2 * edges > sum(len(s) for s in peaks.values()):
            verdicts.append(INCONCLUSIVE)
            lines.append(f"{name}: the best LR sits at the grid's edge in most cases")
            continue
        verdicts.append(test(est, se))
        lines.append(
            f"{name}: slope {est:.2f} ± {se:.2f} se (n={n}): {verdicts[-1].replace('_', ' ')}"
        )
    if not verdicts:
        return inconclusive(f"needs at least two values of {axis} (sweep.{axis}) with an LR grid")
    return Finding(D.majority(verdicts), "; ".join(lines), tuple(ev))


def _log_one_minus(beta: float) -> float:
    return math.log10(1.0 - beta)


def momentum_shift(frames: Frames) -> Finding:
    return _finding(frames, "momentum", _log_one_minus, "log10(1 − β)",
                    lambda est, se: D.near(est, se, 1.0, MOMENTUM_TOL))  # fmt: skip


def batch_grows(frames: Frames) -> Finding:
    return _finding(frames, "batch_size", math.log10, "log10(batch size)",
                    lambda est, se: D.greater(est, se, GROWTH_MARGIN))  # fmt: skip


def batch_linear(frames: Frames) -> Finding:
    return _finding(frames, "batch_size", math.log10, "log10(batch size)",
                    lambda est, se: D.near(est, se, 1.0, LINEAR_TOL))  # fmt: skip


_SLOPE = ("Per seed and {axis} value, the best LR (grid argmax refined by a parabola in log LR); "
          "per seed, the least-squares slope of log10(best LR) against {x}; mean ± standard "
          "error over seeds: ")  # fmt: skip
_EDGE = (" Inconclusive when the best LR sits at the end of the LR grid in most (value, seed) "
         "cases. With several optimizer · schedule groups, " + D.MAJORITY_RULE)  # fmt: skip
CLAIMS = [
    Claim("momentum_shifts_lr", "momentum",
          "Momentum shifts the good LR range: the effective LR is about lr / (1 − β), so the best "
          "LR scales like (1 − β).",
          _SLOPE.format(axis="momentum", x="log10(1 − β)")
          + D.near_rule("the slope", "1", f"{MOMENTUM_TOL:g}") + _EDGE, "axis-momentum",
          momentum_shift),
    Claim("best_lr_grows_with_batch", "batch size", "The best LR grows with the batch size.",
          _SLOPE.format(axis="batch size", x="log10(batch size)")
          + D.greater_rule("the slope", f"{GROWTH_MARGIN:g}") + _EDGE, "axis-batch_size",
          batch_grows),
    Claim("linear_scaling_rule", "batch size",
          "The best LR grows in proportion to the batch size (the linear scaling rule).",
          _SLOPE.format(axis="batch size", x="log10(batch size)")
          + D.near_rule("the slope", "1", f"{LINEAR_TOL:g}") + _EDGE, "axis-batch_size",
          batch_linear),
]  # fmt: skip
