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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lrstudy.schedules.catalog import (
    SCHEDULES,
    build_schedule,
    schedule_arg_names,
    schedule_factory,
    schedule_json_schema,
)
from lrstudy.spec.optimizers import OPTIMIZERS, optimizer_info


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
        try:
            return LRRange.model_validate(v)
        except ValidationError as e:
            raise ValueError(_range_error(v, e)) from None
    if isinstance(v, list | tuple):
        if not v:
            raise ValueError("empty list; give at least one learning rate")
        return tuple(_positive_number(x) for x in v)
    return _positive_number(v)


def _range_error(v: dict, err: ValidationError) -> str:
    """One line for a bad {low, high, num, scale} range: the key at fault and what it allows."""
    errors = err.errors(include_url=False)
    # An unknown key first: `hi` for high is one mistake, reported as the key the user wrote.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(p) for p in first["loc"])
    fields = ", ".join(LRRange.model_fields)
    if first["type"] == "extra_forbidden":
        return f"{v!r} is not allowed: unknown key {key!r} in a range; allowed: {fields}"
    if first["type"] == "missing":
        return f"{v!r} is not allowed: a range needs {key} (keys: {fields})"
    msg = str(first["msg"]).removeprefix("Value error, ")
    if not key:
        return msg  # the range's own check
    # The value of one key is wrong: name that key as the field (`optimizers[0].lr.num: 0 is not
    # allowed`, not `lr: 0`, which would read as a learning rate of 0); the `@key: ` prefix is how
    # spec/load.py appends a key to the field's path.
    value = v.get(first["loc"][0])
    return f"@{key}: {value!r} is not allowed: {_RANGE_KEY_FORMS.get(key, msg)}"


_RANGE_KEY_FORMS = {
    "low": "a learning rate > 0",
    "high": "a learning rate > 0",
    "num": "the number of grid points, a whole number >= 1",
    "scale": "'log' or 'linear'",
}


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


LAYER_LR_FORMS = (
    "a {decay: D} mapping (each earlier layer gets D x the next one's LR, D > 0) "
    "or a list of per-layer multipliers > 0, input to output"
)


def _parse_layer_lr(v: Any) -> Any:
    """`layer_lr:` by hand: a mistake names both forms (not "a valid dictionary" alone)."""
    if v is None or isinstance(v, dict | LayerLR):
        return v  # a mapping: LayerLR's own checks name the key at fault
    if isinstance(v, list | tuple) and v:
        bad = [x for x in v if isinstance(x, bool) or not isinstance(x, int | float)]
        bad += [x for x in v if x not in bad and (not math.isfinite(x) or x <= 0)]
        if not bad:
            return tuple(float(x) for x in v)
        raise ValueError(
            f"{list(v)!r} is not allowed: {bad[0]!r} is not a multiplier > 0; {LAYER_LR_FORMS}"
        )
    raise ValueError(f"{v!r} is not allowed: {LAYER_LR_FORMS}")


class OptimizerSpec(BaseModel):
    """One optimizer and its learning rates; any other key is a hyperparameter of that optimizer."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    lr: LRSpec
    layer_lr: LayerLR | tuple[PositiveFloat, ...] | None = None

    _lr = field_validator("lr", mode="before")(_parse_lr)
    _layer_lr = field_validator("layer_lr", mode="before")(_parse_layer_lr)

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, v: Any) -> Any:
        if not isinstance(v, dict | OptimizerSpec):
            raise ValueError(
                f"{v!r} is not allowed: an optimizer is a mapping {{name, lr, its hyperparameters}}"
            )
        info = OPTIMIZERS.get(v.get("name")) if isinstance(v, dict) else None
        if info is not None and info.lr_free and "lr" not in v:
            # An LR-free optimizer's lr defaults to its package's recommendation (a multiplier
            # of the step size it adapts, for Prodigy and D-Adaptation).
            v = {**v, "lr": info.default_lr}
        return v

    _known = field_validator("name")(_registered(optimizer_info))

    @model_validator(mode="after")
    def _hparams_known(self) -> OptimizerSpec:
        info = optimizer_info(self.name)
        for key, value in self.hparams.items():
            if key not in info.defaults or key in info.fixed:
                allowed = ", ".join(k for k in info.defaults if k not in info.fixed)
                lr_keys = "lr" if info.lr_free == "adaptive" else "lr, layer_lr"
                raise ValueError(
                    f"@{key}: {self.name} does not take {key!r}; allowed: {lr_keys}, {allowed}"
                )
            _check_hparam_type(self.name, key, value, info.defaults[key])
        if info.lr_free == "adaptive" and self.layer_lr is not None:
            # Prodigy and D-Adaptation estimate one step size d for all groups and apply the
            # largest group lr to every group (DAdaptSGD refuses different ones outright).
            raise ValueError(
                f"@layer_lr: {self.name} does not take 'layer_lr': it adapts one step size for all "
                "parameter groups"
            )
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


# LR-free optimizers' own hyperparameters whose form is not given by their default's type.
_WHOLE = ("warmup_steps",)  # counts of steps
_POSITIVE = ("d0", "d_coef", "growth_rate")  # > 0 (growth_rate may be .inf, the default)


def _check_hparam_type(opt: str, key: str, value: Any, default: Any) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if key == "beta3":  # None (the package derives it from beta2) or a beta
        if value is not None and not (number and 0 <= value < 1):
            raise ValueError(
                f"@{key}: {value!r} is not allowed: {opt}.{key} must be null or a number in [0, 1)"
            )
        return
    if key in _WHOLE and not (number and value >= 0 and value == int(value)):
        raise ValueError(
            f"@{key}: {value!r} is not allowed: {opt}.{key} must be a whole number of steps >= 0"
        )
    if key in _POSITIVE and not (number and value > 0):
        raise ValueError(f"@{key}: {value!r} is not allowed: {opt}.{key} must be a number > 0")
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


def _schedules_schema(schema: dict[str, Any], cls: type | None = None) -> None:
    """`lrstudy schema`: a schedule is one of the catalogue's, each with its own arguments.

    The model allows extra keys (a schedule's arguments) and checks them in `_args_known`; the
    JSON schema instead lists one variant per schedule, told apart by `name`, with that schedule's
    arguments (defaults, allowed values) and nothing else, so an editor completes and checks them.
    """
    doc = schema.get("description")
    schema.clear()
    schema.update(
        title="ScheduleSpec",
        description=doc or "One schedule: its name, an optional warmup and its own arguments.",
        oneOf=[schedule_json_schema(name) for name in SCHEDULES],
        discriminator={"propertyName": "name"},
    )


WARMUP_FORMS = "a fraction of all steps, >= 0 and < 1, or a whole number of steps"


def _parse_warmup(v: Any) -> int | float | None:
    """`warmup:` by hand, so a mistake names both forms (not pydantic's int and float errors)."""
    if v is None:
        return None
    ok_int = isinstance(v, int) and not isinstance(v, bool) and v >= 0
    ok_float = isinstance(v, float) and math.isfinite(v) and 0 <= v < 1
    if ok_int or ok_float:
        return v
    hint, shown = "", repr(v)
    if isinstance(v, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*%\s*", v):
        hint = f"; write {float(v.strip().rstrip('%')) / 100:g} for {v.strip()}"
    elif isinstance(v, int | float) and not isinstance(v, bool):
        shown = f"warmup {v!r}"  # "warmup 1.5 is not allowed": a number, out of range
        if isinstance(v, float) and v >= 1 and v == int(v):
            hint = f"; write {int(v)} for {int(v)} steps"
    raise ValueError(f"{shown} is not allowed: {WARMUP_FORMS}{hint}")


class ScheduleSpec(BaseModel):
    """One schedule; `warmup` composes with any; other keys are the schedule's own arguments."""

    model_config = ConfigDict(extra="allow", frozen=True, json_schema_extra=_schedules_schema)

    name: str
    warmup: int | float | None = None

    _known = field_validator("name")(_registered(schedule_factory))
    _warmup = field_validator("warmup", mode="before")(_parse_warmup)

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, v: Any) -> Any:
        if isinstance(v, str) and v in SCHEDULES:
            raise ValueError(f"{v!r} is not allowed: a schedule is a mapping; write {{name: {v}}}")
        if not isinstance(v, dict | ScheduleSpec):
            raise ValueError(
                f"{v!r} is not allowed: a schedule is a mapping {{name, warmup, its arguments}}"
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
