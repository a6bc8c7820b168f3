"""What a study compares: optimizers with their learning rates, and schedules (torch-free).

An `lr:` is a number, a list, a {low, high, num, scale} range or "auto". This module is the one
place that turns any of them into values, the points of a grid search or one draw of a random
search; `plan.py` only asks (`OptimizerSpec.lr_grid`, `OptimizerSpec.sample_lr`).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lrstudy.schedules.catalog import build_schedule, schedule_arg_names, schedule_factory
from lrstudy.spec.optimizers import optimizer_info


class StrictModel(BaseModel):
    """A spec section: unknown keys are errors, and nothing changes after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _readable(x: float) -> float:
    # 6 significant digits: run names stay short, and an LR (part of the trial key) does not
    # depend on the last bits of the spacing arithmetic.
    return float(f"{x:.6g}")


class LRRange(StrictModel):
    """A range of learning rates: a grid of `num` points, or the bounds random search samples from."""

    low: PositiveFloat
    high: PositiveFloat
    num: int | None = Field(default=None, ge=1)
    scale: Literal["log", "linear"] = "log"

    @model_validator(mode="after")
    def _ordered(self) -> LRRange:
        if self.high < self.low:
            raise ValueError(f"high ({self.high:g}) must be >= low ({self.low:g})")
        return self

    def grid(self) -> list[float]:
        """The `num` grid points, low and high included (log- or linearly spaced)."""
        n = self.num or 1
        if n == 1:
            return [self.low]
        if self.scale == "log":
            a, b = math.log10(self.low), math.log10(self.high)
            return [_readable(10 ** (a + (b - a) * i / (n - 1))) for i in range(n)]
        return [_readable(self.low + (self.high - self.low) * i / (n - 1)) for i in range(n)]

    def sample(self, rng: random.Random) -> float:
        """One draw for random search: log-uniform (each decade equally likely) or uniform."""
        if self.scale == "log":
            return _readable(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return _readable(rng.uniform(self.low, self.high))


LRSpec = float | tuple[float, ...] | LRRange | Literal["auto"]


def _parse_lr(v: Any) -> Any:
    """Parse `lr:` by hand so a mistake gives one message instead of one per union member."""
    if v == "auto":
        return v
    if isinstance(v, dict):
        return LRRange.model_validate(v)
    if isinstance(v, list | tuple):
        if not v:
            raise ValueError("empty list; give at least one learning rate")
        return tuple(_positive_number(x) for x in v)
    return _positive_number(v)


def _positive_number(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x <= 0:
        raise ValueError(
            f"{x!r} is not allowed: a learning rate must be a finite number > 0, "
            "a list of them, a {low, high, num, scale} range, or 'auto'"
        )
    return float(x)


def _registered(lookup: Callable[[str], object]) -> Callable[[str], str]:
    """A `name` validator; `lookup` raises the "unknown ...; allowed: ..." error for a wrong name."""

    def check(name: str) -> str:
        lookup(name)
        return name

    return check


class LayerLR(StrictModel):
    """Discriminative LRs: each earlier layer gets `decay` x the next one's LR."""

    decay: PositiveFloat


class OptimizerSpec(BaseModel):
    """One optimizer and its learning rates; any other key is a hyperparameter of that optimizer."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    lr: LRSpec
    layer_lr: LayerLR | tuple[PositiveFloat, ...] | None = None

    _lr = field_validator("lr", mode="before")(_parse_lr)
    _known = field_validator("name")(_registered(optimizer_info))

    @model_validator(mode="after")
    def _hparams_known(self) -> OptimizerSpec:
        info = optimizer_info(self.name)
        for key, value in self.hparams.items():
            if key not in info.defaults or key in info.fixed:
                allowed = ", ".join(k for k in info.defaults if k not in info.fixed)
                raise ValueError(
                    f"@{key}: {self.name} does not take {key!r}; allowed: lr, layer_lr, {allowed}"
                )
            _check_hparam_type(self.name, key, value, info.defaults[key])
        hp = {**info.defaults, **self.hparams, **info.fixed}
        if hp.get("nesterov") and not hp.get("momentum"):
            raise ValueError(
                f"@momentum: {hp.get('momentum')!r} is not allowed: nesterov needs momentum > 0"
            )
        return self

    @property
    def hparams(self) -> dict[str, Any]:
        """User-given hyperparameters other than lr/layer_lr (validated against the optimizer)."""
        return dict(self.model_extra or {})

    def lr_grid(self) -> list[float | None]:
        """The LRs a grid search tries; [None] for `lr: auto` (a range test decides per trial)."""
        if self.lr == "auto":
            return [None]
        if isinstance(self.lr, LRRange):
            return list(self.lr.grid())
        if isinstance(self.lr, tuple):
            return list(self.lr)
        return [float(self.lr)]

    def sample_lr(self, rng: random.Random) -> float | None:
        """One LR for random search. A single value (or auto) draws nothing from `rng`, so adding
        an optimizer with a fixed LR does not change what the others draw."""
        if isinstance(self.lr, LRRange):
            return self.lr.sample(rng)
        if isinstance(self.lr, tuple):
            return rng.choice(self.lr)
        return self.lr_grid()[0]


def _check_hparam_type(opt: str, key: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"@{key}: {value!r} is not allowed: {opt}.{key} must be true or false")
    elif isinstance(default, tuple):
        ok = isinstance(value, list | tuple) and len(value) == len(default)
        if not ok or not all(isinstance(b, int | float) and 0 <= b < 1 for b in value):
            raise ValueError(
                f"@{key}: {value!r} is not allowed: {opt}.{key} must be a list of {len(default)} numbers in [0, 1)"
            )
    elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"@{key}: {value!r} is not allowed: {opt}.{key} must be a number >= 0")


class ScheduleSpec(BaseModel):
    """One schedule; `warmup` composes with any; other keys are the schedule's own arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    warmup: int | float | None = None

    _known = field_validator("name")(_registered(schedule_factory))

    @field_validator("warmup")
    @classmethod
    def _warmup(cls, v: int | float | None) -> int | float | None:
        if v is None or isinstance(v, bool):
            return None if v is None else _fail(f"warmup: {v!r} is not a number")
        if isinstance(v, int) and v < 0 or isinstance(v, float) and not 0 <= v < 1:
            raise ValueError(
                f"warmup {v!r} is not allowed: a fraction of all steps in [0, 1) or a whole number of steps >= 0"
            )
        return v

    @model_validator(mode="after")
    def _args_known(self) -> ScheduleSpec:
        allowed = schedule_arg_names(self.name)
        for key in self.args:
            if key not in allowed:
                names = ", ".join(["warmup", *allowed])
                raise ValueError(
                    f"@{key}: schedule {self.name} does not take {key!r}; allowed: {names}"
                )
        # Build once on a dummy length so bad values (gamma <= 0, ...) fail here, before any training.
        try:
            build_schedule(self.name, self.args, total_steps=100, steps_per_epoch=10)
        except (ValueError, TypeError) as e:
            arg = re.match(r"^(\w+)=", str(e))
            raise ValueError(f"@{arg.group(1)}: {str(e)[arg.end() :]}" if arg else str(e)) from None
        return self

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def label(self) -> str:
        """Short readable name, e.g. "cosine+warmup"."""
        return schedule_label(self.name, self.warmup)


def schedule_label(name: str, warmup: int | float | None) -> str:
    """A schedule as run names and the report show it: "cosine", or "cosine+warmup"."""
    return f"{name}+warmup" if warmup else name


def _fail(msg: str) -> Any:
    raise ValueError(msg)
