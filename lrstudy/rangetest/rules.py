"""The numbers of an LR range test, without torch: pure functions of the recorded losses.

A range test (Smith 2015, "Cyclical Learning Rates for Training Neural Networks", sec. 3.3; the
fastai `lr_find`) trains for a few hundred steps while the LR grows from tiny to huge and records
the loss. This module holds everything after the loss is known: the EMA smoothing with bias
correction and the early stop (`LossTracker`), the suggestion rules and the recommendation;
the loss-vs-LR figure is drawn in `figure.py`. All rules read the *smoothed* loss on the points
strictly before the early stop, with the first 10% of the planned steps left out (fastai does the
same: the EMA has barely started there and single noisy batches dominate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

SMOOTHING = 0.98  # fastai's EMA factor: a memory of ~1/(1-0.98) = 50 steps
STOP_FACTOR = 4.0  # stop when the smoothed loss exceeds 4x its best so far (fastai)
MAX_NONFINITE = 5  # NaN/inf losses in a row after which the weights are surely gone
SKIP_START = 0.1  # fraction of the planned steps the rules ignore at the start
MIN_POINTS = 5  # fewer usable points than this: no suggestion at all

# fastai's `slide` defaults are in steps of its default test (100 steps over 1e-7..10, i.e.
# 99/8 = 12.375 steps per decade): a 15-step window and a gradient threshold of 0.005 loss per step.
# Re-expressed per decade of LR they no longer depend on how many steps a test takes.
_FASTAI_STEPS_PER_DECADE = 99 / 8
SLIDE_WINDOW = 15 / _FASTAI_STEPS_PER_DECADE  # ~1.21 decades
SLIDE_THRESHOLD = 0.005 * _FASTAI_STEPS_PER_DECADE  # ~0.062 loss per decade

# A curve whose smoothed loss never falls this fraction below its starting level saw no learning
# (0.5% = 0.01 nats for a 10-class start at 2.3): rules that read a descent then read noise.
# In lrstudy's evaluation (README, bench/rangetest_rules.py) only the MNIST-1D GRU with RMSprop,
# which needs more than a range test's few hundred steps to start learning, fell below it
# (0.0-0.5%); the other tasks' curves fell 0.75-63% even at 100 steps.
FLAT_DROP = 0.005
EDGE_RISE = 0.05  # "the loss starts to rise": 5% above its minimum so far
EDGE_DIVISOR = 3.0  # Smith 2017 (CLR, sec. 3.3): base LR = max LR / 3 to / 4

RULES = ("min_div10", "geomean", "steepest", "valley", "slide", "edge_div3")
# min_div10 first (edge_div3 on a flat curve, see FLAT_DROP). Measured against the best LR of full
# grids (3 seeds) on 13 tasks, data set x model x optimizer, at --steps 100/200/400 with 3
# range-test seeds each (README, "The range test's recommendation"; bench/rangetest_rules.py):
# it gave up the least accuracy of every rule and combination tried (0.042 on average) and landed
# within 3x of the grid's best in 103 of 117 tests. geomean landed within 3x more often on the
# 10 tasks it was first chosen on (89 of 90), but overshot on 2 of the 3 held-out ones, and an LR
# above the best costs more than one below it (the divergence cliff): 0.079 accuracy given up.
# fastai's valley landed 4-10x too low, slide in the blow-up.
PREFERENCE = ("min_div10", "geomean", "steepest", "valley", "slide", "edge_div3")

EXPLANATIONS = {
    "geomean": "the geometric mean of steepest and min_div10: between where the loss falls fastest "
    "and a tenth of where it stops falling",
    "valley": "about halfway along the longest stretch over which the smoothed loss keeps falling "
    "(fastai's default rule), so training is fast yet well below the LR where the loss blows up",
    "steepest": "where the smoothed loss falls fastest per decade of LR on its way down",
    "min_div10": "one tenth of the LR at the lowest smoothed loss, a step back from where more LR "
    "stops helping (fastai's `minimum`), which gave up the least accuracy against full LR grids "
    "in lrstudy's evaluation over 13 tasks",
    "slide": "the left end of the last 1.2-decade window, sliding down from the blow-up, whose two "
    "ends still disagree on the loss slope (fastai's interval-slide rule)",
    "edge_div3": "a third of the LR where the smoothed loss first rises 5% above its minimum "
    "(Smith 2017: a base LR of a third of the largest LR that still trains)",
}
FLAT_NOTE = (
    "The smoothed loss fell by only {drop:.1%} before it rose: the test saw no learning, so the "
    "rules that read a descent read noise; a third of where the loss starts to rise is used. "
    "A model that starts slowly (an RNN, say) may need more --steps or a narrower ramp."
)


class LossTracker:
    """Online EMA of the loss with bias correction, and the early-stop decision.

    `update(loss)` returns the smoothed loss `avg_n / (1 - beta**n)` where `avg_n` is the plain EMA
    over the n finite losses so far; the division removes the EMA's pull towards its zero start.
    Non-finite losses are dropped (returned as NaN, the EMA unchanged); `max_nonfinite` of them in
    a row stop the test. The test also stops once the smoothed loss exceeds `stop_factor` x the best
    smoothed loss so far (only meaningful for positive losses; with best <= 0 this check is off).
    """

    def __init__(
        self,
        smoothing: float = SMOOTHING,
        stop_factor: float | None = STOP_FACTOR,
        max_nonfinite: int = MAX_NONFINITE,
    ) -> None:
        self.beta = smoothing
        self.stop_factor = stop_factor
        self.max_nonfinite = max_nonfinite
        self.best = math.inf
        self.stop_reason: str | None = None
        self._avg = 0.0
        self._n = 0
        self._bad = 0

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def update(self, loss: float) -> float:
        if not math.isfinite(loss):
            self._bad += 1
            if self._bad >= self.max_nonfinite:
                self.stop_reason = f"{self._bad} non-finite losses in a row"
            return math.nan
        self._bad = 0
        self._n += 1
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smoothed = self._avg / (1 - self.beta**self._n)
        if smoothed < self.best:
            self.best = smoothed
        elif self.stop_factor and self.best > 0 and smoothed > self.stop_factor * self.best:
            self.stop_reason = (
                f"smoothed loss {smoothed:.4g} > {self.stop_factor:g} x best {self.best:.4g}"
            )
        return smoothed


def lr_ramp(lr_min: float, lr_max: float, steps: int, mode: str = "exp") -> np.ndarray:
    """The LR of each step: geometric ("exp") or arithmetic ("linear") from lr_min to lr_max."""
    t = np.arange(steps) / max(steps - 1, 1)
    if mode == "exp":
        return lr_min * (lr_max / lr_min) ** t
    if mode == "linear":
        return lr_min + (lr_max - lr_min) * t
    raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")


def usable_curve(
    lrs: Sequence[float], smoothed: Sequence[float], *, stop_index: int | None, skip: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (lr, smoothed loss) points the rules read: finite, from `skip` to before `stop_index`."""
    end = len(smoothed) if stop_index is None else stop_index
    x = np.asarray(lrs[skip:end], dtype=float)
    y = np.asarray(smoothed[skip:end], dtype=float)
    keep = np.isfinite(y) & np.isfinite(x) & (x > 0)
    return x[keep], y[keep]


# --- the rules: each takes lrs (increasing) and smoothed losses, returns an LR or None ------------


def steepest(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """Steepest descent: the LR minimising d(loss)/d(log10 LR) (central differences, np.gradient).

    Only points up to the lowest loss count: beyond it the loss is on its way up, and a dip there
    (a classifier falling back from a spike to chance level, say) is recovery, not descent.
    None when the loss never decreases.
    """
    grad = np.gradient(losses, np.log10(lrs))[: int(np.argmin(losses)) + 1]
    i = int(np.argmin(grad))
    return float(lrs[i]) if grad[i] < 0 else None


def valley(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """fastai's `valley` rule (fastai.callback.schedule.valley, v2.5+; Zachary Mueller's idea).

    The "valley" is the longest strictly decreasing subsequence of the loss (not necessarily
    contiguous; ties go to the one ending first), found by O(n^2) dynamic programming. With `end`
    its last index and `L` its length, fastai sets `start = end - L` and picks index
    `start + int((end - start) / 3) + int((end - start) / 6)`, i.e. about halfway along the valley
    in log-LR steps. (Often summarised as "2/3 of the way down"; the arithmetic is what it is.)
    The index is clamped into range, which fastai does not do. None without any decrease.
    """
    n = len(losses)
    lds = np.ones(n, dtype=int)
    end = 0
    for i in range(1, n):
        higher = lds[:i][losses[:i] > losses[i]]
        if higher.size:
            lds[i] = higher.max() + 1
        if lds[i] > lds[end]:
            end = i
    if lds[end] < 2:
        return None
    start = end - int(lds[end])
    sections = (end - start) / 3
    idx = min(max(start + int(sections) + int(sections / 2), 0), n - 1)
    return float(lrs[idx])


def min_div10(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR at the lowest smoothed loss, divided by 10 (fastai's `minimum`)."""
    return float(lrs[int(np.argmin(losses))]) / 10


def slide(
    lrs: np.ndarray,
    losses: np.ndarray,
    window: float = SLIDE_WINDOW,
    threshold: float = SLIDE_THRESHOLD,
) -> float | None:
    """fastai's interval-slide rule (fastai.callback.schedule.slide), measured in decades of LR.

    With g = d(loss)/d(log10 LR): put a window of `window` decades at the right end of the curve
    (the blow-up); while the slopes at its two ends differ by more than `threshold` (loss per
    decade), remember the LR at its left end and slide it one point to the left. The suggestion is
    the last remembered LR: just right of where the slope has become uniform again, i.e. where the
    loss stops changing shape on the way up. fastai counts the window (15) and the threshold
    (0.005/step) in steps of its 100-step default test; `SLIDE_WINDOW` and `SLIDE_THRESHOLD` are
    exactly those values converted to decades. None when the curve spans less than one window.
    """
    x = np.log10(lrs)
    if x[-1] - x[0] < window:
        return None
    grad = np.gradient(losses, x)

    def left_of(r: int) -> int:  # the point nearest to window decades left of r
        return int(np.argmin(np.abs(x[: r + 1] - (x[r] - window))))

    r = len(x) - 1
    l_idx = left_of(r)
    suggestion = lrs[l_idx]
    while x[r] - x[0] >= window - 1e-12 and abs(grad[r] - grad[l_idx]) > threshold:
        suggestion = lrs[l_idx]
        r -= 1
        l_idx = left_of(r)
    return float(suggestion)


def geomean(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """sqrt(steepest x min_div10): between the two, on a log scale. None without a steepest."""
    a = steepest(lrs, losses)
    return None if a is None else math.sqrt(a * min_div10(lrs, losses))


def edge_div3(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """A third of the first LR, after the lowest smoothed loss, at which the loss is `EDGE_RISE`
    above that minimum (relative to its size, so any positive loss scale works). None when the
    loss never rises that far: the ramp ended before the edge."""
    i = int(np.argmin(losses))
    above = np.nonzero(losses[i:] > losses[i] + EDGE_RISE * abs(losses[i]))[0]
    return float(lrs[i + above[0]]) / EDGE_DIVISOR if above.size else None


def drop(losses: np.ndarray) -> float | None:
    """How far the smoothed loss fell below its first usable value, as a fraction of it."""
    if len(losses) == 0 or losses[0] == 0:
        return None
    return float((losses[0] - losses.min()) / abs(losses[0]))


def is_flat(losses: np.ndarray) -> bool:
    """The curve never fell `FLAT_DROP` below its start (see FLAT_DROP)."""
    fell = drop(losses)
    return fell is not None and len(losses) >= MIN_POINTS and fell < FLAT_DROP


RULE_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray], float | None]] = {
    "geomean": geomean,
    "edge_div3": edge_div3,
    "steepest": steepest,
    "valley": valley,
    "min_div10": min_div10,
    "slide": slide,
}


def suggest(lrs: np.ndarray, losses: np.ndarray) -> dict[str, float | None]:
    """Every rule's LR on one usable curve (see `usable_curve`); None where a rule has no answer."""
    if len(lrs) < MIN_POINTS:
        return dict.fromkeys(RULES)
    return {name: RULE_FUNCS[name](lrs, losses) for name in RULES}


def recommend(suggestions: dict[str, float | None], *, flat: bool = False) -> str | None:
    """The rule to use: on a flat curve edge_div3 (if it has an answer), else the first of
    `PREFERENCE` with an answer (min_div10 if there is one)."""
    if flat and suggestions.get("edge_div3") is not None:
        return "edge_div3"
    return next((r for r in PREFERENCE if suggestions.get(r) is not None), None)


def spread(suggestions: dict[str, float | None]) -> float | None:
    """max/min of the suggested LRs: how much the rules disagree (1.0 = they agree)."""
    values = [v for v in suggestions.values() if v is not None and v > 0]
    return max(values) / min(values) if values else None


def explain(rule: str, lr: float, fell: float | None = None) -> str:
    """What the recommended value is and why; with how far the loss fell when that was too
    little to read (see FLAT_DROP)."""
    text = f"Recommended LR {lr:.3g} ({rule}): {EXPLANATIONS[rule]}."
    if fell is not None and fell < FLAT_DROP:
        text += " " + FLAT_NOTE.format(drop=max(fell, 0.0))
    return text


# The smoothed loss is an EMA with a memory of ~1/(1 - smoothing) steps (50 at 0.98): until that
# many finite losses are in, it is close to the plain mean of everything so far, and afterwards it
# still lags the ramp by about that many steps. So the rules read a curve that follows the LR only
# past that warm-up; a test gets trusted when at least as many steps again came after it, i.e. when
# the curve the rules read ends at step >= 2 x memory (100 steps at the default smoothing: the
# shortest test lrstudy's evaluation measured the rules on, bench/rangetest_rules.py).
TRUSTED_MEMORIES = 2


def ema_memory(smoothing: float) -> float:
    """Steps the smoothed loss remembers: 1 / (1 - smoothing); 1 without smoothing."""
    return 1.0 / (1.0 - smoothing) if 0 <= smoothing < 1 else math.inf


def trust_warnings(
    *, steps: int, end: int, smoothing: float, recommended: str | None
) -> tuple[str, ...]:
    """Why a recommendation should not be trusted: a test too short for its EMA to follow the LR.

    steps: the planned steps; end: the step the rules' curve ends at (the early stop, else the
    steps run); smoothing: the EMA factor. Empty when the curve is long enough, or when nothing
    is recommended (the explanation already says why).
    """
    if recommended is None:
        return ()
    memory = ema_memory(smoothing)
    need = math.ceil(TRUSTED_MEMORIES * memory)
    if end >= need:
        return ()
    if end < steps:
        why = f"the test stopped at step {end} of {steps}"
        fix = "lower the minimum LR (--min) so the loss has room to fall before it blows up"
    else:
        why = f"the test ran only {steps} steps"
        fix = f"use steps (--steps) >= {need}"
    return (
        f"{why}, fewer than the {need} the rules need to be trusted: the smoothed loss (EMA, "
        f"smoothing {smoothing:g}) averages the last ~{memory:.0f} steps, so it follows the LR only "
        f"after about {memory:.0f} steps and the curve the rules read is mostly the EMA warming "
        f"up; {fix}.",
    )
