"""Spec stage: a study YAML file -> a validated, frozen `StudySpec`.

Validation happens here, once, at the edge; everything downstream trusts the spec. Every mistake
becomes a `UserInputError` whose message is one line: file, field, value, what is allowed.
The optimizer, LR and schedule sections live in `lr.py`, the task in `task.py`; this module holds
the rest and the study.
This module must stay free of torch (the report stage loads specs too).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, field_validator, model_validator

from lrstudy import names
from lrstudy.keys import stable_hash
from lrstudy.spec.lr import LRRange, OptimizerSpec, ScheduleSpec, StrictModel
from lrstudy.spec.search import AUTO_FACTORS, SearchSpec
from lrstudy.spec.task import TaskSpec

# What a target may name: metrics every trial logs once per epoch. Literal of a tuple is the
# Literal of its items, so the names come from names.py and the JSON schema still lists them.
TARGET_METRICS = (names.VAL_ACC, names.VAL_LOSS, names.TRAIN_ACC, names.TRAIN_LOSS_EPOCH)
ACCURACY_METRICS = (names.VAL_ACC, names.TRAIN_ACC)  # fractions of samples, in [0, 1]


class Target(StrictModel):
    """Convergence speed = the first step at which `metric` reaches `value`."""

    metric: Literal[TARGET_METRICS] = names.VAL_ACC  # type: ignore[valid-type]
    value: float = Field(allow_inf_nan=False)
    mode: Literal["max", "min"] | None = None

    @model_validator(mode="after")
    def _reachable(self) -> Target:
        # An accuracy of 95 (meant as 95%) is never reached: the study would run to the end and
        # report every trial as "never reached the target" instead of failing here.
        if self.metric in ACCURACY_METRICS and not 0 <= self.value <= 1:
            raise ValueError(
                f"@value: {self.value:g} is not allowed: {self.metric} is an accuracy, a fraction "
                f"in [0, 1] (write 0.95 for 95%)"
            )
        return self

    @property
    def resolved_mode(self) -> str:
        """Higher is better unless told, or unless the metric is a loss."""
        return self.mode or ("min" if "loss" in self.metric else "max")


class Divergence(StrictModel):
    """A trial diverges on a non-finite loss or a loss above `factor` x its initial loss.

    The initial loss is the mean of the first 5 step losses (one noisy first batch must not stop a
    healthy run); before those 5 are in, only a jump above factor**2 x the first loss counts.
    """

    factor: float = Field(default=10.0, gt=1)


class TrainSpec(StrictModel):
    epochs: int = Field(ge=1)
    # Required for lrstudy's data; a user DataModule may set it in its own init_args instead.
    batch_size: int | None = Field(default=None, ge=1)
    target: Target | None = None
    divergence: Divergence = Divergence()
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    # Small reference models run fastest on one CPU thread, and the second core then serves the
    # metric writer process; set more for bigger models. Ignored on GPU.
    threads: int = Field(default=1, ge=1)


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


class SweepSpec(StrictModel):
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


class EvaluateSpec(StrictModel):
    noise: tuple[float, ...] = ()

    _n = field_validator("noise", mode="before")(_nonempty_unique(float, low=0, strict_low=True))


class TrackingSpec(StrictModel):
    experiment: str | None = None
    uri: str | None = None


class ReportSpec(StrictModel):
    dir: str = "reports"
    enabled: bool = True


def _known_claim(name: str) -> str:
    # The registry lives with the report, whose frames its checks read (torch-free, MLflow-free);
    # imported on first use only, so loading a study without claims never imports pandas.
    from lrstudy.report.claims.registry import claim_names

    allowed = claim_names()
    if name not in allowed:
        raise ValueError(f"{name!r} is not allowed: unknown claim; allowed: {', '.join(allowed)}")
    return name


ClaimName = Annotated[str, AfterValidator(_known_claim)]


def _lr_free(name: str) -> str:
    from lrstudy.spec.optimizers import LR_FREE

    if name not in LR_FREE:
        raise ValueError(
            f"{name!r} is not allowed: a baseline is an LR-free optimizer; allowed: "
            f"{', '.join(LR_FREE)}"
        )
    return name


BaselineName = Annotated[str, AfterValidator(_lr_free)]


class StudySpec(StrictModel):
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
    # Claims about learning rates this study tests (names in lrstudy.report.claims); the report
    # checks them and shows a verdict for each. They change what is reported, not what is run.
    claims: tuple[ClaimName, ...] = ()
    # LR-free optimizers run at their defaults over the study's seeds beside the grid (issue 16);
    # the report draws them as bands on the LR axis and says what tuning gains over each.
    baselines: tuple[BaselineName, ...] = ()

    @field_validator("baselines")
    @classmethod
    def _baselines_once(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({b for b in v if v.count(b) > 1})
        if twice:
            raise ValueError(f"{twice[0]!r} is not allowed: listed twice")
        return v

    @field_validator("claims")
    @classmethod
    def _claims_once(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({c for c in v if v.count(c) > 1})
        if twice:
            raise ValueError(f"{twice[0]!r} is not allowed: listed twice")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool):
            if v < 1 or v != int(v):
                raise ValueError(
                    f"{v!r} is not allowed: a whole number of seeds >= 1 or a list of seeds"
                )
            return tuple(range(int(v)))
        return _nonempty_unique(int, low=0)(v)

    @model_validator(mode="after")
    def _batch_size(self) -> StudySpec:
        # lrstudy's own data need a batch size; a user's DataModule (or a LightningModule with
        # its own loaders) may set one in its init_args instead.
        if self.train.batch_size is None and self.task.kind != "module":
            raise ValueError("@train.batch_size: required field is missing")
        return self

    @model_validator(mode="after")
    def _grid_and_sweep(self) -> StudySpec:
        for i, opt in enumerate(self.optimizers):
            if (
                isinstance(opt.lr, LRRange)
                and opt.lr.num is None
                and self.search.sampling == "grid"
            ):
                raise ValueError(f"@optimizers[{i}].lr: a range needs num: N for a grid search")
            for axis in ("momentum", "weight_decay"):
                if getattr(self.sweep, axis) is not None and axis in opt.hparams:
                    raise ValueError(
                        f"@optimizers[{i}].{axis}: also swept by sweep.{axis}; keep one of the two"
                    )
        return self

    @model_validator(mode="after")
    def _halving(self) -> StudySpec:
        halving = self.search.successive_halving
        if halving is None:
            return self
        metric = self.rank_metric[0]
        if self.task.kind != "module" and metric not in TARGET_METRICS:
            # lrstudy's own trainer logs just these per epoch; a rung judged on a metric never
            # logged would see NaN for everyone and stop every configuration
            raise ValueError(
                f"@task.metric.name: {metric!r} is not allowed with successive halving: it "
                f"ranks configurations at each rung, and this task logs {', '.join(TARGET_METRICS)}"
            )
        if halving.min_epochs >= self.train.epochs:
            field = "min_epochs" if self.search.method == "halving" else "halving.min_epochs"
            raise ValueError(
                f"@search.{field}: {halving.min_epochs} is not allowed: it must be below "
                f"train.epochs ({self.train.epochs}), so a rung comes before the end"
            )
        if self.search.sampling == "grid":
            axes = self.sweep.axes().values()
            # `lr: auto` becomes len(AUTO_FACTORS) candidates under halving
            lrs = [
                len(AUTO_FACTORS) if o.lr == "auto" else len(o.lr_grid()) for o in self.optimizers
            ]
            size = len(self.schedules) * sum(lrs)
            size *= math.prod(len(v) for v in axes)
        else:
            size = self.search.trials or 0
        if size < 2:
            raise ValueError(
                f"@search.method: {self.search.method} is not allowed: successive halving "
                f"compares configurations and this study has {size}; add LRs or sweep axes"
            )
        return self

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def rank_metric(self) -> tuple[str, str]:
        """(metric name, "max" | "min"): what ranks configurations (seed-mean of final values).

        Given by task.metric; else val/acc for lrstudy's classifiers (a reference model, or a
        user model trained with cross-entropy), val/loss for a user model with another loss, and
        the final training loss for a user LightningModule.
        """
        if self.task.metric is not None:
            return self.task.metric.name, self.task.metric.resolved_mode
        if self.task.kind == "module":
            return names.TRAIN_LOSS_EPOCH, "min"
        if self.task.kind == "model" and self.task.loss_name != "cross_entropy":
            return names.VAL_LOSS, "min"
        return names.VAL_ACC, "max"

    def spec_hash(self) -> str:
        """Hash of what defines the study (not where it is tracked or reported, nor the claims
        its report checks: declaring a claim must not make finished trials look foreign)."""
        body = self.model_dump(mode="json", exclude={"tracking", "report", "description", "claims"})
        # Task fields added for user classes count only when set, so the hash of every study
        # written before them stays what it was (pinned in tests/test_keys.py).
        for key in ("module", "datamodule", "loss", "metric", "param_groups"):
            if body["task"].get(key) is None:
                body["task"].pop(key, None)
        if not body.get("baselines"):  # likewise for studies written before baselines
            body.pop("baselines", None)
        for key in ("eta", "min_epochs", "halving"):  # likewise the halving settings
            if body["search"].get(key) is None:
                body["search"].pop(key, None)
        return stable_hash(body, length=12)

    def resolved_yaml(self) -> str:
        """The spec with every default filled in, as YAML (logged as the parent run's artifact)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
