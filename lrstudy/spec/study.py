"""Spec stage: a study YAML file -> a validated, frozen `StudySpec`.

Validation happens here, once, at the edge; everything downstream trusts the spec. Every mistake
becomes a `UserInputError` whose message is one line: file, field, value, what is allowed.
This module must stay free of torch (the report stage loads specs too).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lrstudy.schedules.catalog import SCHEDULES, build_schedule, schedule_arg_names
from lrstudy.spec.optimizers import OPTIMIZERS


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class LRRange(_Model):
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
            return [float(f"{10 ** (a + (b - a) * i / (n - 1)):.6g}") for i in range(n)]
        return [float(f"{self.low + (self.high - self.low) * i / (n - 1):.6g}") for i in range(n)]


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


class LayerLR(_Model):
    """Discriminative LRs: each earlier layer gets `decay` x the next one's LR."""

    decay: PositiveFloat


class OptimizerSpec(BaseModel):
    """One optimizer and its learning rates; any other key is a hyperparameter of that optimizer."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    lr: LRSpec
    layer_lr: LayerLR | tuple[PositiveFloat, ...] | None = None

    _lr = field_validator("lr", mode="before")(_parse_lr)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; allowed: {', '.join(OPTIMIZERS)}")
        return v

    @model_validator(mode="after")
    def _hparams_known(self) -> OptimizerSpec:
        info = OPTIMIZERS[self.name]
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

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SCHEDULES:
            raise ValueError(f"unknown schedule {v!r}; allowed: {', '.join(SCHEDULES)}")
        return v

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
        return f"{self.name}+warmup" if self.warmup else self.name


def _fail(msg: str) -> Any:
    raise ValueError(msg)


class Target(_Model):
    """Convergence speed = the first step at which `metric` reaches `value`."""

    metric: Literal["val/acc", "val/loss", "train/acc", "train/loss_epoch"] = "val/acc"
    value: float
    mode: Literal["max", "min"] | None = None

    @property
    def resolved_mode(self) -> str:
        """Higher is better unless told, or unless the metric is a loss."""
        return self.mode or ("min" if "loss" in self.metric else "max")


class Divergence(_Model):
    """A trial diverges on a non-finite loss or a loss above `factor` x its initial loss.

    The initial loss is the mean of the first 5 step losses (one noisy first batch must not stop a
    healthy run); before those 5 are in, only a jump above factor**2 x the first loss counts.
    """

    factor: float = Field(default=10.0, gt=1)


class TrainSpec(_Model):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    target: Target | None = None
    divergence: Divergence = Divergence()
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    # Small reference models run fastest on one CPU thread, and the second core then serves the
    # metric writer process; set more for bigger models. Ignored on GPU.
    threads: int = Field(default=1, ge=1)


class TaskSpec(_Model):
    dataset: str
    model: str
    model_args: dict[str, Any] = {}
    data_args: dict[str, Any] = {}


def _nonempty_unique(
    kind: type, *, low: float, high: float | None = None, strict_low: bool = False
):
    def check(v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, list) or not v:
            raise ValueError(f"{v!r} is not allowed: a non-empty list")
        for x in v:
            if (
                isinstance(x, bool)
                or not isinstance(x, int | float)
                or (kind is int and x != int(x))
            ):
                raise ValueError(f"{x!r} is not a{'n integer' if kind is int else ' number'}")
            if x < low or (strict_low and x == low) or (high is not None and x > high):
                bound = f"{'>' if strict_low else '>='} {low:g}" + (
                    f" and <= {high:g}" if high else ""
                )
                raise ValueError(f"{x!r} is not allowed: values must be {bound}")
        return tuple(kind(x) for x in v)

    return check


class SweepSpec(_Model):
    """Grid axes beyond LR; the trials are the product of all axes."""

    batch_size: tuple[int, ...] | None = None
    momentum: tuple[float, ...] | None = None
    weight_decay: tuple[float, ...] | None = None
    train_fraction: tuple[float, ...] | None = None

    _bs = field_validator("batch_size", mode="before")(_nonempty_unique(int, low=1))
    _m = field_validator("momentum", mode="before")(_nonempty_unique(float, low=0, high=0.9999))
    _wd = field_validator("weight_decay", mode="before")(_nonempty_unique(float, low=0))
    _tf = field_validator("train_fraction", mode="before")(
        _nonempty_unique(float, low=0, high=1, strict_low=True)
    )

    def axes(self) -> dict[str, tuple]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SearchSpec(_Model):
    method: Literal["grid", "random"] = "grid"
    trials: int | None = Field(default=None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _trials(self) -> SearchSpec:
        if self.method == "random" and self.trials is None:
            raise ValueError("random search needs trials: N (number of sampled configurations)")
        return self


class EvaluateSpec(_Model):
    noise: tuple[float, ...] = ()

    _n = field_validator("noise", mode="before")(_nonempty_unique(float, low=0, strict_low=True))


class TrackingSpec(_Model):
    experiment: str | None = None
    uri: str | None = None


class ReportSpec(_Model):
    dir: str = "reports"
    enabled: bool = True


class StudySpec(_Model):
    """A whole study, as written in the YAML file (after validation)."""

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    task: TaskSpec
    train: TrainSpec
    optimizers: tuple[OptimizerSpec, ...] = Field(min_length=1)
    schedules: tuple[ScheduleSpec, ...] = Field(
        default=(ScheduleSpec(name="constant"),), min_length=1
    )
    seeds: tuple[int, ...] = (0,)
    sweep: SweepSpec = SweepSpec()
    search: SearchSpec = SearchSpec()
    evaluate: EvaluateSpec = EvaluateSpec()
    tracking: TrackingSpec = TrackingSpec()
    report: ReportSpec = ReportSpec()

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            if v < 1:
                raise ValueError(f"{v!r} is not allowed: a number of seeds >= 1 or a list of seeds")
            return tuple(range(v))
        return _nonempty_unique(int, low=0)(v)

    @model_validator(mode="after")
    def _grid_and_sweep(self) -> StudySpec:
        for i, opt in enumerate(self.optimizers):
            if isinstance(opt.lr, LRRange) and opt.lr.num is None and self.search.method == "grid":
                raise ValueError(f"@optimizers[{i}].lr: a range needs num: N for a grid search")
            for axis in ("momentum", "weight_decay"):
                if getattr(self.sweep, axis) is not None and axis in opt.hparams:
                    raise ValueError(
                        f"@optimizers[{i}].{axis}: also swept by sweep.{axis}; keep one of the two"
                    )
        return self

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    def spec_hash(self) -> str:
        """Hash of what defines the study (not where it is tracked or reported)."""
        body = self.model_dump(mode="json", exclude={"tracking", "report", "description"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    def resolved_yaml(self) -> str:
        """The spec with every default filled in, as YAML (logged as the parent run's artifact)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

