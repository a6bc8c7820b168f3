"""The stateless schedule shapes: pure functions of the optimizer step, built without torch.

Each factory takes the run's length (`total_steps`, `steps_per_epoch`, given by the trainer) and the
user's arguments (keyword-only, all with defaults, since the spec stage reads them off the
signature) and returns `step -> multiplier of the peak LR`. `lrstudy.schedules.catalog` registers them,
adds the stateful Plateau and joins any of them to a warmup.

User durations are in epochs (floats allowed), converted with `steps_per_epoch`. Durations of
discrete events (decay every N epochs, milestones, cycle lengths) are rounded to whole steps, so the
LR changes at a well-defined step. Interpolations use `_mix`, which is exact at both ends: boundary
values (1.0, `end`, `min`) come out as the very floats the user wrote. Bad argument values raise
ValueError naming the argument, the value and what is allowed.
"""

from __future__ import annotations

import contextlib
import math
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

Schedule = Callable[[int], float]


def check_number(name: str, value: Any, allowed: str, ok: Callable[[float], bool]) -> float:
    """`value` as a float if it is a number that passes `ok`, else a ValueError naming it."""
    number = value
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
        with contextlib.suppress(ValueError):
            number = float(value)
    good = isinstance(number, int | float) and not isinstance(number, bool)
    if not good or math.isnan(number) or not ok(number):
        raise ValueError(f"{name}={value!r} is not allowed: must be {allowed}")
    return float(number)


def check_choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name}={value!r} is not allowed: must be one of {', '.join(options)}")
    return value


def check_positive(name: str, value: Any) -> float:
    return check_number(name, value, "a number > 0", lambda v: 0 < v < math.inf)


def check_unit(name: str, value: Any) -> float:
    return check_number(name, value, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def check_gamma(name: str, value: Any) -> float:
    return check_number(name, value, "a number in (0, 1]", lambda v: 0 < v <= 1)


def _steps(epochs: float, steps_per_epoch: int, least: int = 1) -> int:
    return max(least, round(epochs * steps_per_epoch))


def _mix(w: float, low: float) -> float:
    """1.0 at w=1 and exactly `low` at w=0 (a plain lerp is off by one ulp at one end)."""
    return w + (1.0 - w) * low


def _progress(step: int, n: int) -> float:
    """Fraction of the way from step 0 to the last step n-1, held at 1 after it."""
    return 0.0 if n <= 1 else min(1.0, max(0.0, step / (n - 1)))


def constant(*, total_steps: int, steps_per_epoch: int) -> Schedule:
    """The peak LR at every step."""
    return lambda step: 1.0


def step_decay(
    *, total_steps: int, steps_per_epoch: int, every: float = 3.0, gamma: float = 0.1
) -> Schedule:
    """Multiply by `gamma` every `every` epochs (torch StepLR): gamma ** floor(epoch / every)."""
    period = _steps(check_positive("every", every), steps_per_epoch)
    g = check_gamma("gamma", gamma)
    return lambda step: g ** (step // period)


def multistep(
    *,
    total_steps: int,
    steps_per_epoch: int,
    milestones: list[float] | None = None,
    gamma: float = 0.1,
) -> Schedule:
    """Multiply by `gamma` at each milestone epoch (torch MultiStepLR).

    milestones: epochs; None puts them at 1/2 and 3/4 of training, the classic ResNet recipe.
    """
    g = check_gamma("gamma", gamma)
    if milestones is None:
        at = [round(total_steps / 2), round(total_steps * 3 / 4)]
    else:
        try:
            if isinstance(milestones, str):  # iterable, but never a list of epochs
                raise TypeError
            epochs = [check_number("m", m, "", lambda v: 0 <= v < math.inf) for m in milestones]
        except (TypeError, ValueError):
            msg = f"milestones={milestones!r} is not allowed: must be a list of epochs >= 0"
            raise ValueError(msg) from None
        at = sorted(_steps(m, steps_per_epoch, least=0) for m in epochs)
    return lambda step: g ** bisect_right(at, step)


def exponential(*, total_steps: int, steps_per_epoch: int, gamma: float = 0.9) -> Schedule:
    """Decay by `gamma` per epoch, applied smoothly per step: gamma ** (step / steps_per_epoch)."""
    g = check_gamma("gamma", gamma)
    return lambda step: g ** (step / steps_per_epoch)


def inverse_time(*, total_steps: int, steps_per_epoch: int, decay: float = 1.0) -> Schedule:
    """1 / (1 + decay * epoch), epoch counted in fractions: the classic Robbins-Monro decay."""
    d = check_number("decay", decay, "a number >= 0", lambda v: 0 <= v < math.inf)
    return lambda step: 1.0 / (1.0 + d * step / steps_per_epoch)


def linear(*, total_steps: int, steps_per_epoch: int, end: float = 0.0) -> Schedule:
    """Straight line from 1 at the first step to `end` at the last step."""
    e = check_unit("end", end)
    return lambda step: _mix(1.0 - _progress(step, total_steps), e)


def polynomial(
    *, total_steps: int, steps_per_epoch: int, power: float = 2.0, end: float = 0.0
) -> Schedule:
    """end + (1 - end) * (1 - t) ** power, t going 0 -> 1 from the first to the last step."""
    p = check_positive("power", power)
    e = check_unit("end", end)
    return lambda step: _mix((1.0 - _progress(step, total_steps)) ** p, e)


def _half_cosine(t: float) -> float:
    """1 at t=0, 0 at t=1 (cos(pi) is exactly -1), the shape of every cosine schedule."""
    return 0.5 * (1.0 + math.cos(math.pi * t))


def cosine(*, total_steps: int, steps_per_epoch: int, min: float = 0.0) -> Schedule:
    """Half cosine from 1 at the first step to `min` at the last (CosineAnnealingLR, T_max=n-1)."""
    low = check_unit("min", min)
    return lambda step: _mix(_half_cosine(_progress(step, total_steps)), low)


def _cycle_starts(first: float, mult: float, beyond: int) -> list[int]:
    """Whole-step starts of cycles of length first, first*mult, ... until one starts after `beyond`.

    Rounding the running float sum (not each length) keeps N equal cycles summing to N steps.
    """
    starts, edge, length = [0], 0.0, first
    while starts[-1] <= beyond:
        edge, length = edge + length, length * mult
        starts.append(max(starts[-1] + 1, round(edge)))
    return starts


def cosine_restarts(
    *,
    total_steps: int,
    steps_per_epoch: int,
    period: float | None = None,
    mult: float = 1.0,
    min: float = 0.0,
) -> Schedule:
    """SGDR warm restarts: cosine cycles from 1 down to `min`, each then jumping back to 1.

    period: epochs in the first cycle; None fits three cycles into the run (a third of it when
    mult=1). mult: each cycle is `mult` times longer than the one before (SGDR's T_mult).
    Each cycle is a `cosine` of its own length, reaching `min` on its last step, so a run whose
    cycles tile it ends at `min`. (torch's CosineAnnealingWarmRestarts divides by the cycle length,
    not length - 1, so it restarts where it would reach `min` and never lands on it.)
    """
    m = check_number("mult", mult, "a number >= 1", lambda v: 1 <= v < math.inf)
    if period is None:
        first = total_steps / (1.0 + m + m * m)
    else:
        first = float(_steps(check_positive("period", period), steps_per_epoch))
    low = check_unit("min", min)
    known = _cycle_starts(first, m, total_steps)

    def schedule(step: int) -> float:
        starts = known if step < known[-1] else _cycle_starts(first, m, step)
        i = bisect_right(starts, step) - 1
        return _mix(_half_cosine(_progress(step - starts[i], starts[i + 1] - starts[i])), low)

    return schedule


def cyclic(
    *,
    total_steps: int,
    steps_per_epoch: int,
    mode: str = "triangular",
    base: float = 0.1,
    period: float = 2.0,
    gamma: float = 0.99,
) -> Schedule:
    """Smith's cyclical LR (torch CyclicLR): between `base` and 1 (the peak), starting at `base`.

    period: epochs per full cycle (up and down). mode: triangular (constant amplitude),
    triangular2 (amplitude halves each cycle) or exp_range (amplitude * gamma ** step).
    """
    check_choice("mode", mode, ("triangular", "triangular2", "exp_range"))
    low = check_number("base", base, "a number in [0, 1)", lambda v: 0 <= v < 1)
    full = _steps(check_positive("period", period), steps_per_epoch, least=2)
    g = check_gamma("gamma", gamma)

    def schedule(step: int) -> float:
        cycle = math.floor(1 + step / full)
        height = max(0.0, 1.0 - abs(2 * step / full - 2 * cycle + 1))
        if mode == "triangular2":
            height /= 2.0 ** (cycle - 1)
        elif mode == "exp_range":
            height *= g**step
        return _mix(height, low)

    return schedule


def one_cycle(
    *,
    total_steps: int,
    steps_per_epoch: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cos",
) -> Schedule:
    """Smith's 1cycle as torch's OneCycleLR (two phases), for the LR only (momentum is not cycled).

    From 1/div_factor up to 1 over the first pct_start of the steps, then down to
    1/(div_factor * final_div_factor) at the last step; anneal: "cos" or "linear".
    """
    pct = check_number("pct_start", pct_start, "a number in (0, 1)", lambda v: 0 < v < 1)
    first = 1.0 / check_number(
        "div_factor", div_factor, "a number >= 1", lambda v: 1 <= v < math.inf
    )
    last = first / check_number(
        "final_div_factor", final_div_factor, "a number >= 1", lambda v: 1 <= v < math.inf
    )
    cos = check_choice("anneal", anneal, ("cos", "linear")) == "cos"
    peak_step = pct * total_steps - 1.0  # float, exactly as torch computes it
    end_step = total_steps - 1.0

    def schedule(step: int) -> float:
        value_from, value_to, start, end = (first, 1.0, 0.0, peak_step)
        if step > peak_step:
            value_from, value_to, start, end = (1.0, last, peak_step, end_step)
        t = 1.0 if end <= start else min(1.0, (step - start) / (end - start))
        w = _half_cosine(t) if cos else 1.0 - t
        return w * value_from + (1.0 - w) * value_to  # exact at t=0 and at t=1

    return schedule
