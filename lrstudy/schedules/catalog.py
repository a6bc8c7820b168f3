"""Learning-rate schedules: the registry, the one warmup join, and the stateful Plateau.

A schedule maps a 0-based optimizer step to a multiplier of the peak LR (the spec's `lr`). As in
optax, shapes are small factories (`lrstudy.schedules.shapes`) and bigger shapes come from one join
(`join_warmup`), so a schedule can be evaluated, plotted and tested without an optimizer. The spec
and report stages import this module, so it must not import torch; `lrstudy.train.optim.ScheduleAdapter`
is the one bridge to torch.
"""

from __future__ import annotations

import inspect
import math
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from lrstudy import names
from lrstudy.schedules.shapes import (
    Schedule,
    check_choice,
    check_number,
    check_unit,
    constant,
    cosine,
    cosine_restarts,
    cyclic,
    exponential,
    inverse_time,
    linear,
    multistep,
    one_cycle,
    polynomial,
    step_decay,
)


class Plateau:
    """ReduceLROnPlateau as a schedule: multiply by `factor` when `monitor` stops improving.

    The one stateful schedule. `observe` is called once per epoch end with the monitored value; the
    multiplier in force at each step is recorded, so `schedule(step)` of an earlier step still
    returns what was applied then. Improvement is relative (torch's threshold_mode="rel"): in
    mode "min" a value counts if it is below best * (1 - threshold). After more than `patience`
    epochs without improvement the multiplier drops by `factor`, never below `min` (a multiplier).
    patience counts epochs (observations), not steps.
    """

    def __init__(
        self,
        *,
        factor: float = 0.1,
        patience: int = 2,
        threshold: float = 1e-4,
        mode: str = "min",
        min: float = 0.0,
        monitor: str = names.VAL_LOSS,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        # total_steps and steps_per_epoch: given to every schedule by the trainer (so the class
        # itself is the registry's factory); a plateau follows observations, not the step count.
        self.factor = check_number("factor", factor, "a number in (0, 1)", lambda v: 0 < v < 1)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience={patience!r} is not allowed: must be a whole number >= 0")
        self.patience = patience
        self.threshold = check_number(
            "threshold", threshold, "a number >= 0", lambda v: 0 <= v < math.inf
        )
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.floor = check_unit("min", min)
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(
                f"monitor={monitor!r} is not allowed: must be a metric name like val/loss"
            )
        self.monitor = monitor
        self._changed_at, self._values = [0], [1.0]
        self._best = math.inf if mode == "min" else -math.inf
        self._bad = 0
        self._last_step = 0

    def __call__(self, step: int) -> float:
        self._last_step = step
        return self._values[max(0, bisect_right(self._changed_at, step) - 1)]

    def observe(self, value: float, step: int | None = None) -> None:
        """Feed one monitored value (once per epoch end); a reduction applies from `step` on.

        step: the first step to get the reduced LR. ScheduleAdapter.observe passes the next step
        and re-sets the optimizer's LRs at once. None means the step after the one last asked
        for, whose LR is already in the optimizer: the record stays true to what was applied.
        """
        at = max(self._last_step + 1 if step is None else step, self._changed_at[-1])
        value = float(value)
        if self.mode == "min":
            better = value < self._best * (1.0 - self.threshold)
        else:
            better = value > self._best * (1.0 + self.threshold)
        self._bad = 0 if better else self._bad + 1
        self._best = value if better else self._best
        if self._bad > self.patience:
            self._bad = 0
            reduced = max(self._values[-1] * self.factor, self.floor)
            if reduced < self._values[-1]:
                if at == self._changed_at[-1]:
                    self._values[-1] = reduced
                else:
                    self._changed_at.append(at)
                    self._values.append(reduced)

    def state_dict(self) -> dict[str, Any]:
        keys = ("_changed_at", "_values", "_best", "_bad", "_last_step")
        return {
            k: list(v) if isinstance(v, list) else v for k, v in vars(self).items() if k in keys
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


class Warmup:
    """The one join: a linear warmup of `warmup_steps` steps, then `main` restarted at step 0.

    The multiplier is (step + 1) / W during warmup (1/W at step 0, exactly 1.0 at step W-1), then
    main(step - W), so main's own end lands on the last step when it was built for total - W steps.
    """

    def __init__(self, main: Schedule, warmup_steps: int) -> None:
        self.main, self.warmup_steps = main, warmup_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.main(step - self.warmup_steps)


class PlateauWarmup(Warmup):
    """Warmup joined to a Plateau: observations made during warmup are dropped.

    While the LR is still rising, a stalling loss says nothing about the peak LR being too high, and
    the loss falls so fast that it would also set an unreachable `best`; so plateau bookkeeping
    (best value, patience) starts with the first observation at step >= W.
    """

    main: Plateau

    def __init__(self, main: Plateau, warmup_steps: int) -> None:
        super().__init__(main, warmup_steps)
        self.monitor = main.monitor
        self._last_step = 0

    def __call__(self, step: int) -> float:
        self._last_step = step
        return super().__call__(step)

    def observe(self, value: float, step: int | None = None) -> None:
        """Like Plateau.observe, in steps of the joined schedule."""
        at = self._last_step + 1 if step is None else step
        if at >= self.warmup_steps:
            self.main.observe(value, at - self.warmup_steps)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self._last_step, "main": self.main.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last_step = state["last_step"]
        self.main.load_state_dict(state["main"])


def join_warmup(main: Schedule, warmup_steps: int) -> Schedule:
    """Prefix `main` with a linear warmup (see Warmup); with 0 warmup steps, `main` itself."""
    if warmup_steps <= 0:
        return main
    if isinstance(main, Plateau):
        return PlateauWarmup(main, warmup_steps)
    return Warmup(main, warmup_steps)


def monitor_of(schedule: Schedule) -> str | None:
    """Metric a schedule wants to `observe` each epoch (e.g. "val/loss"), or None if it needs none."""
    return getattr(schedule, "monitor", None)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "step": step_decay,
    "multistep": multistep,
    "exponential": exponential,
    "inverse_time": inverse_time,
    "linear": linear,
    "polynomial": polynomial,
    "cosine": cosine,
    "cosine_restarts": cosine_restarts,
    "cyclic": cyclic,
    "one_cycle": one_cycle,
    "plateau": Plateau,
}
_BUILT_IN = ("total_steps", "steps_per_epoch")  # given by the trainer, not the user


def schedule_factory(name: str) -> Callable[..., Schedule]:
    """The registry's factory for schedule `name`.

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    return SCHEDULES[name]


def schedule_arg_names(name: str) -> list[str]:
    """The arguments a user may give schedule `name`, in signature order."""
    params = inspect.signature(schedule_factory(name)).parameters
    return [p for p in params if p not in _BUILT_IN]


def schedule_defaults(name: str) -> dict[str, Any]:
    """Every user argument of schedule `name` with its default (for labels and logged params)."""
    params = inspect.signature(schedule_factory(name)).parameters
    return {p: params[p].default for p in schedule_arg_names(name)}


def warmup_steps_from(warmup: float | int | None, total_steps: int) -> int:
    """Warmup length in steps: an int is steps, a float in [0, 1) a fraction of all steps, None 0.

    Raises:
        ValueError: a negative or non-number warmup, a float >= 1, or no steps left after warmup.
    """
    if warmup is None:
        return 0
    if isinstance(warmup, bool) or not isinstance(warmup, int | float):
        raise ValueError(f"warmup={warmup!r} is not allowed: must be a number")
    if isinstance(warmup, float) and not 0 <= warmup < 1:
        raise ValueError(
            f"warmup={warmup!r} is not allowed: a fraction must be in [0, 1); write whole steps as an int"
        )
    steps = round(warmup * total_steps) if isinstance(warmup, float) else warmup
    if not 0 <= steps < total_steps:
        raise ValueError(
            f"warmup={warmup!r} is not allowed: must leave steps of the {total_steps} to train"
        )
    return steps


def build_schedule(
    name: str,
    args: dict[str, Any],
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
) -> Schedule:
    """Schedule `name` with user `args` over total_steps steps, after `warmup_steps` of warmup.

    The main schedule is built for the total_steps - warmup_steps steps after warmup, so its end
    value lands on the last step; epoch-based args count epochs from the end of warmup.

    Raises:
        ValueError: unknown name or argument, or an argument value outside what is allowed.
    """
    factory = schedule_factory(name)
    unknown = sorted(set(args) - set(schedule_arg_names(name)))
    if unknown:
        allowed = ", ".join(schedule_arg_names(name)) or "no arguments"
        raise ValueError(f"schedule {name} does not take {', '.join(unknown)}; allowed: {allowed}")
    if total_steps < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"total_steps={total_steps} and steps_per_epoch={steps_per_epoch} must be >= 1"
        )
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must be in [0, total_steps={total_steps})")
    main = factory(total_steps=total_steps - warmup_steps, steps_per_epoch=steps_per_epoch, **args)
    return join_warmup(main, warmup_steps)


# --- The catalogue as users read it: README table, JSON schema (`lrstudy schema`) ---------------

# What each user argument means and allows, by schedule (the factories check the values; this is
# what editors and the README show). tests/test_newcomer.py checks it covers every argument.
ARG_HELP: dict[str, dict[str, str]] = {
    "step": {"every": "epochs between decays (> 0)", "gamma": "factor per decay, in (0, 1]"},
    "multistep": {
        "milestones": "epochs at which to decay (list, >= 0); default 1/2 and 3/4 of training",
        "gamma": "factor per milestone, in (0, 1]",
    },
    "exponential": {"gamma": "factor per epoch, applied smoothly per step, in (0, 1]"},
    "inverse_time": {"decay": "1 / (1 + decay x epoch), decay >= 0"},
    "linear": {"end": "multiplier at the last step, in [0, 1]"},
    "polynomial": {"power": "exponent (> 0)", "end": "multiplier at the last step, in [0, 1]"},
    "cosine": {"min": "multiplier at the last step, in [0, 1]"},
    "cosine_restarts": {
        "period": "epochs in the first cycle (> 0); default: three cycles fill the run",
        "mult": "each cycle this many times longer than the one before (>= 1)",
        "min": "multiplier at the end of each cycle, in [0, 1]",
    },
    "cyclic": {
        "mode": "triangular, triangular2 (amplitude halves each cycle) or exp_range",
        "base": "lowest multiplier, in [0, 1)",
        "period": "epochs per full cycle, up and down (> 0)",
        "gamma": "exp_range: amplitude x gamma ** step, in (0, 1]",
    },
    "one_cycle": {
        "pct_start": "fraction of the steps spent rising, in (0, 1)",
        "div_factor": "start at 1 / div_factor (>= 1)",
        "final_div_factor": "end at 1 / (div_factor x final_div_factor) (>= 1)",
        "anneal": "cos or linear",
    },
    "plateau": {
        "factor": "multiply by this on a plateau, in (0, 1)",
        "patience": "epochs without improvement tolerated (whole number >= 0)",
        "threshold": "relative improvement that counts (>= 0)",
        "mode": "min (a loss) or max (an accuracy)",
        "min": "the multiplier never drops below this, in [0, 1]",
        "monitor": "metric observed at each epoch end, e.g. val/loss or val/acc",
    },
}
ARG_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("cyclic", "mode"): ("triangular", "triangular2", "exp_range"),
    ("one_cycle", "anneal"): ("cos", "linear"),
    ("plateau", "mode"): ("min", "max"),
}
WARMUP_HELP = (
    "linear warmup before the schedule: a fraction of all steps in [0, 1) (0.1 = the first 10%) "
    "or a whole number of steps"
)
_JSON_TYPES = {"float": "number", "int": "integer", "str": "string", "list[float]": "array"}


def schedule_summary(name: str) -> str:
    """The first sentence of the schedule's docstring: what it does."""
    doc = inspect.getdoc(schedule_factory(name)) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _arg_schema(name: str, arg: str, annotation: str, default: Any) -> dict[str, Any]:
    kinds = [k.strip() for k in str(annotation).split("|")]
    options = []
    for kind in kinds:
        if kind == "None":
            options.append({"type": "null"})
        elif kind == "list[float]":
            options.append({"type": "array", "items": {"type": "number"}})
        else:
            options.append({"type": _JSON_TYPES[kind]})
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if (name, arg) in ARG_CHOICES:
        schema = {"enum": list(ARG_CHOICES[(name, arg)])}
    return {**schema, "default": default, "description": ARG_HELP[name][arg]}


def schedule_json_schema(name: str) -> dict[str, Any]:
    """JSON schema of one `schedules[]` entry naming `name`: its own arguments, nothing else."""
    params = inspect.signature(schedule_factory(name)).parameters
    props: dict[str, Any] = {
        "name": {"const": name, "description": schedule_summary(name)},
        "warmup": {
            "anyOf": [
                {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                {"type": "integer", "minimum": 0},
                {"type": "null"},
            ],
            "default": None,
            "description": WARMUP_HELP,
        },
    }
    for arg in schedule_arg_names(name):
        p = params[arg]
        props[arg] = _arg_schema(name, arg, p.annotation, p.default)
    return {
        "type": "object",
        "title": name,
        "description": schedule_summary(name),
        "properties": props,
        "required": ["name"],
        "additionalProperties": False,
    }


def _shown(value: Any) -> str:
    if value is None:
        return "auto"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def schedules_markdown() -> str:
    """The README's table of schedules: every argument with its default and what it allows.

    tests/test_newcomer.py checks the README holds exactly this text between its markers.
    """
    rows = ["| `name` | arguments (default) | what it does |", "|---|---|---|"]
    for name in SCHEDULES:
        defaults = schedule_defaults(name)
        args = "<br>".join(
            f"`{arg}` ({_shown(default)}): {ARG_HELP[name][arg]}"
            for arg, default in defaults.items()
        )
        summary = schedule_summary(name).replace("|", "\\|")
        rows.append(f"| `{name}` | {args or '-'} | {summary} |")
    return "\n".join(rows)
