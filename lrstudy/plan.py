"""Plan stage: a `StudySpec` -> the list of `Trial`s to run.

Pure and deterministic: the same spec always yields the same trials, in the same order, with the
same keys. A key is a hash of every resolved setting that can change what a trial computes, so
resuming asks MLflow which keys are already finished. No torch here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

from lrstudy.keys import stable_hash
from lrstudy.spec.lr import LRRange, OptimizerSpec, ScheduleSpec, schedule_label
from lrstudy.spec.optimizers import OPTIMIZERS, resolved_hparams
from lrstudy.spec.search import AUTO_FACTORS
from lrstudy.spec.study import StudySpec


@dataclass(frozen=True)
class Trial:
    """One training run: every setting resolved, nothing left to look up in the spec."""

    study: str
    optimizer: str
    lr: float | None  # peak LR (of the last layer); None while `lr: auto` is unresolved
    hparams: dict[str, Any] = field(hash=False)  # every optimizer hyperparameter but lr
    layer_lr: dict[str, float] | tuple[float, ...] | None
    schedule: str
    schedule_args: dict[str, Any] = field(hash=False)
    warmup: int | float | None
    batch_size: int | None  # None: a user DataModule/LightningModule that sets its own
    epochs: int
    train_fraction: float
    seed: int
    dataset: str
    model: str
    model_args: dict[str, Any] = field(hash=False)
    data_args: dict[str, Any] = field(hash=False)
    target: dict[str, Any] | None = field(hash=False)
    divergence_factor: float
    evaluate_noise: tuple[float, ...]
    accelerator: str
    threads: int
    swept: dict[str, Any] = field(hash=False)  # the sweep axes and their values for this trial
    lr_auto: bool = False
    # User classes (spec task.module / task.model class_path): `model` and `dataset` then hold
    # the class paths of the model (or LightningModule) and data set (or DataModule; "" when the
    # module brings its own loaders), `model_args` / `data_args` their init_args.
    task_kind: str = "reference"  # "reference", "model" (nn.Module) or "module" (LightningModule)
    # A user model's training loss: a name, or {class_path, init_args} of a loss class.
    loss: str | dict[str, Any] = field(default="cross_entropy", hash=False)
    param_groups: dict[str, list[str]] | None = field(default=None, hash=False)
    # Successive halving ({"eta": 3.0, "rungs": [1, 3, 9]}): the trial may stop at a rung, so its
    # key differs from the same trial in a full grid (whose finished runs never stopped early).
    halving: dict[str, Any] | None = field(default=None, hash=False)
    # `lr: auto` under successive halving: this candidate trains at factor x the range test's
    # recommendation, and halving picks among the candidates (`AUTO_FACTORS`).
    lr_factor: float | None = None
    # TPE (search.method: tpe): {"slot": i, "slot_id": hash, "placeholder": bool}. The key is the
    # slot's and the seed's, not the settings' (sampled when the slot's first seed is claimed,
    # `execute/tpe.py`); a placeholder holds the space's first point until then.
    tpe: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def settings(self) -> dict[str, Any]:
        """Everything that defines what this trial computes (JSON-able); the key hashes it."""
        return (
            {
                "optimizer": self.optimizer,
                "lr": "auto" if self.lr_auto else self.lr,
                "hparams": self.hparams,
                "layer_lr": self.layer_lr,
                "schedule": self.schedule,
                "schedule_args": self.schedule_args,
                "warmup": self.warmup,
                "batch_size": self.batch_size,
                "epochs": self.epochs,
                "train_fraction": self.train_fraction,
                "seed": self.seed,
                "dataset": self.dataset,
                "model": self.model,
                "model_args": self.model_args,
                "data_args": self.data_args,
                "target": self.target,
                "divergence_factor": self.divergence_factor,
                "evaluate_noise": list(self.evaluate_noise),
            }
            | self._user_settings()
            | ({"halving": self.halving} if self.halving else {})
            | ({"lr_factor": self.lr_factor} if self.lr_factor is not None else {})
        )

    def _user_settings(self) -> dict[str, Any]:
        # Only for user classes, so every reference trial keeps the key it always had.
        if self.task_kind == "reference":
            return {}
        return {"task_kind": self.task_kind, "loss": self.loss, "param_groups": self.param_groups}

    @property
    def key(self) -> str:
        """Stable identity of this trial across invocations (resume skips finished keys)."""
        if self.tpe is not None:  # a TPE slot's seed: claimed before its settings are sampled
            return stable_hash({"tpe_slot": self.tpe["slot_id"], "seed": self.seed})
        return stable_hash(self.settings)

    @property
    def config_key(self) -> str:
        """Identity of the configuration without the seed: seeds of one config share it (a
        sampled TPE configuration has the key a grid trial with its settings would have)."""
        if self.tpe is not None and self.tpe.get("placeholder"):
            return self.tpe["slot_id"]
        return stable_hash({k: v for k, v in self.settings.items() if k != "seed"})

    @property
    def schedule_label(self) -> str:
        return schedule_label(self.schedule, self.warmup)

    @property
    def name(self) -> str:
        """Readable run name, e.g. ``sgd lr=0.03 cosine+warmup seed=1``."""
        if self.tpe is not None and self.tpe.get("placeholder"):
            return f"tpe slot {self.tpe['slot']} seed={self.seed}"
        lr = "auto" if self.lr_auto and self.lr is None else f"{self.lr:.3g}"
        if self.lr_factor is not None and self.lr is None:
            lr = f"auto×{self.lr_factor:.3g}"
        parts = [self.optimizer, f"lr={lr}", self.schedule_label]
        short = {
            "batch_size": "bs",
            "momentum": "mom",
            "weight_decay": "wd",
            "train_fraction": "frac",
        }
        parts += [f"{short[k]}={v:g}" for k, v in self.swept.items()]
        return " ".join([*parts, f"seed={self.seed}"])


def plan_trials(spec: StudySpec) -> list[Trial]:
    """Expand the spec into trials: a full grid, or `search.trials` random configurations x seeds
    (TPE: `search.trials` slots x seeds, sampled as they are claimed)."""
    if spec.search.sampling == "tpe":
        return _tpe_trials(spec)
    configs = _random_configs(spec) if spec.search.sampling == "random" else _grid_configs(spec)
    if spec.search.successive_halving and spec.search.sampling == "grid":
        # Asynchronous halving judges each configuration against those that reached the rung
        # before it; in grid order (LR rising) each would beat all before it and none would stop.
        random.Random(spec.search.seed).shuffle(configs)
    configs += baseline_configs(spec)
    trials = [_make_trial(spec, *cfg, seed=seed) for cfg in configs for seed in spec.seeds]
    # Two configurations can resolve to the same settings (e.g. a momentum sweep on an optimizer
    # without momentum); run each key once.
    unique: dict[str, Trial] = {}
    for t in trials:
        unique.setdefault(t.key, t)
    return list(unique.values())


Config = tuple  # (OptimizerSpec, LR or None for auto, ScheduleSpec, swept axes[, LR factor])


def _grid_configs(spec: StudySpec) -> list[Config]:
    out: list[Config] = []
    axes = spec.sweep.axes()
    for opt in spec.optimizers:
        for sched in spec.schedules:
            for lr in opt.lr_grid():
                for factor in _auto_factors(spec) if lr is None else (None,):
                    for combo in itertools.product(*axes.values()):
                        swept = _applicable(opt, dict(zip(axes, combo)))
                        out.append((opt, lr, sched, swept, factor))
    return out


def _auto_factors(spec: StudySpec) -> tuple[float | None, ...]:
    """`lr: auto`'s candidates: under successive halving, factors around the range test's
    recommendation for halving to pick from; otherwise the recommendation itself."""
    return AUTO_FACTORS if spec.search.successive_halving else (None,)


def _random_configs(spec: StudySpec) -> list[Config]:
    rng = random.Random(spec.search.seed)
    axes = spec.sweep.axes()
    out: list[Config] = []
    for _ in range(spec.search.trials or 0):
        opt = rng.choice(spec.optimizers)
        sched = rng.choice(spec.schedules)
        lr = opt.sample_lr(rng)
        swept = {k: rng.choice(v) for k, v in axes.items()}
        out.append((opt, lr, sched, _applicable(opt, swept)))
    return out


def baseline_configs(spec: StudySpec) -> list[Config]:
    """The study's LR-free baselines: each at its defaults (its package's lr, constant schedule,
    no sweep axis), run over the study's seeds like any configuration."""
    return [
        (OptimizerSpec(name=name), OPTIMIZERS[name].default_lr, ScheduleSpec(name="constant"), {})
        for name in spec.baselines
    ]


def _applicable(opt: OptimizerSpec, swept: dict[str, Any]) -> dict[str, Any]:
    """Drop a momentum axis value for optimizers that have no momentum (it would change nothing)."""
    if "momentum" in swept and OPTIMIZERS[opt.name].momentum_kind is None:
        swept = {k: v for k, v in swept.items() if k != "momentum"}
    return swept


def _make_trial(
    spec: StudySpec,
    opt: OptimizerSpec,
    lr: float | None,
    sched: ScheduleSpec,
    swept: dict,
    lr_factor: float | None = None,
    *,
    seed: int,
) -> Trial:
    given = dict(opt.hparams)
    if "weight_decay" in swept:
        given["weight_decay"] = swept["weight_decay"]
    hp = resolved_hparams(opt.name, given)
    if "momentum" in swept:  # momentum means beta1 for the Adam family
        if OPTIMIZERS[opt.name].momentum_kind == "beta1":
            hp["betas"] = (float(swept["momentum"]), hp["betas"][1])
        else:
            hp["momentum"] = float(swept["momentum"])
    hp = {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()}
    layer_lr: Any = (
        opt.layer_lr.model_dump() if hasattr(opt.layer_lr, "model_dump") else opt.layer_lr
    )
    task = spec.task
    batch_size = swept.get("batch_size", spec.train.batch_size)
    model, model_args = task.model, dict(task.model_args)
    dataset, data_args = task.dataset, dict(task.data_args)
    if task.kind == "module":
        model, model_args = task.module.class_path, dict(task.module.init_args)
        dm = task.datamodule
        dataset, data_args = (dm.class_path, dict(dm.init_args)) if dm else ("", {})
        if batch_size is None:  # the DataModule's own batch size, when it says one
            batch_size = data_args.get("batch_size")
    if hasattr(model, "class_path"):  # a user nn.Module
        model, model_args = model.class_path, dict(model.init_args)
    if hasattr(dataset, "class_path"):  # a user torch Dataset
        dataset, data_args = dataset.class_path, {**dataset.init_args, **data_args}
    return Trial(
        study=spec.name,
        optimizer=opt.name,
        lr=lr,
        hparams=hp,
        layer_lr=layer_lr,
        schedule=sched.name,
        schedule_args=sched.args,
        warmup=sched.warmup,
        batch_size=int(batch_size) if batch_size is not None else None,
        epochs=spec.train.epochs,
        train_fraction=float(swept.get("train_fraction", 1.0)),
        seed=seed,
        dataset=dataset,
        model=model,
        model_args=model_args,
        data_args=data_args,
        target=spec.train.target.model_dump() | {"mode": spec.train.target.resolved_mode}
        if spec.train.target
        else None,
        divergence_factor=spec.train.divergence.factor,
        evaluate_noise=spec.evaluate.noise,
        accelerator=spec.train.accelerator,
        threads=spec.train.threads,
        swept=swept,
        lr_auto=lr is None,
        task_kind=task.kind,
        loss=task.loss.model_dump() if hasattr(task.loss, "model_dump") else task.loss_name,
        param_groups={k: list(v) for k, v in task.param_groups.items()}
        if task.param_groups
        else None,
        halving=_halving(spec),
        lr_factor=lr_factor,
    )


def _halving(spec: StudySpec) -> dict[str, Any] | None:
    halving = spec.search.successive_halving
    if halving is None:
        return None
    return {"eta": halving.eta, "rungs": list(halving.rungs(spec.train.epochs))}


# ---- TPE: N slots x seeds, each slot's configuration sampled when its first seed is claimed ----

# The settings a TPE slot samples (and those that follow from them): not part of the slot's key.
_SAMPLED = ("optimizer", "lr", "hparams", "layer_lr", "schedule", "schedule_args", "warmup",
            "batch_size", "train_fraction", "seed")  # fmt: skip


def tpe_space(spec: StudySpec) -> dict[str, Any]:
    """What a TPE study samples from, as JSON: part of every slot's key, so editing the space
    (or the search's seed or start-up) makes new slots rather than reusing old samples."""
    return {
        "optimizers": [o.model_dump(mode="json") for o in spec.optimizers],
        "schedules": [s.model_dump(mode="json") for s in spec.schedules],
        "sweep": {k: list(v) for k, v in spec.sweep.axes().items()},
        "seed": spec.search.seed,
        "startup": spec.search.tpe_startup,
    }


def _tpe_trials(spec: StudySpec) -> list[Trial]:
    axes = spec.sweep.axes()
    opt, sched = spec.optimizers[0], spec.schedules[0]
    # The placeholder is a real point of the space (first optimizer and schedule, the LR range's
    # low end, each axis's first value): preflight checks it as it would any trial.
    first = _applicable(opt, {k: v[0] for k, v in axes.items()})
    lr = opt.lr.low if hasattr(opt.lr, "low") else opt.lr_grid()[0]
    probe = _make_trial(spec, opt, lr, sched, first, seed=spec.seeds[0])
    fixed = {k: v for k, v in probe.settings.items() if k not in _SAMPLED}
    space = tpe_space(spec)
    trials = []
    for i in range(spec.search.trials or 0):
        slot_id = stable_hash({"tpe": space, "slot": i, "fixed": fixed})
        info = {"slot": i, "slot_id": slot_id, "placeholder": True}
        trials += [dataclasses.replace(probe, seed=s, tpe=info) for s in spec.seeds]
    baselines = [_make_trial(spec, *cfg, seed=s) for cfg in baseline_configs(spec)
                 for s in spec.seeds]  # fmt: skip
    return trials + baselines


def tpe_problem(spec: StudySpec) -> str | None:
    """What makes a TPE study impossible, as `field: message` (None when it is sound)."""
    if spec.search.sampling != "tpe":
        return None
    if importlib.util.find_spec("optuna") is None:
        return ("search.method: tpe needs optuna, which is not installed; "
                "pip install 'optuna>=5,<6'")  # fmt: skip
    for i, opt in enumerate(spec.optimizers):
        if opt.lr == "auto":
            return (f"optimizers[{i}].lr: 'auto' is not allowed with search.method: tpe; give a "
                    "{low, high} range (TPE samples the LR) or a list of LRs")  # fmt: skip
    finite, size = True, len(spec.schedules) * math.prod(len(v) for v in spec.sweep.axes().values())
    lrs = 0
    for opt in spec.optimizers:
        if isinstance(opt.lr, LRRange) and opt.lr.high > opt.lr.low:
            finite = False
        lrs += len(set(opt.lr_grid())) if not isinstance(opt.lr, LRRange) else 1
    size *= lrs
    trials = spec.search.trials or 0
    if finite and size < 2:
        return ("search.method: tpe is not allowed: this study has one configuration and nothing "
                "to sample; give an LR range {low, high}, several LRs, schedules or sweep values")  # fmt: skip
    if finite and trials > size:
        return (f"search.trials: {trials} is not allowed: this study's space has only {size} "
                "configurations (no LR range to sample from); give trials <= "
                f"{size}, an LR range {{low, high}}, or use method: grid")  # fmt: skip
    return None


def sampled_trial(spec: StudySpec, slot: Trial, sampled: dict[str, Any]) -> Trial:
    """The trial of TPE slot `slot` (a placeholder) at its sampled configuration: the slot's key,
    the settings (and config key) of the grid trial with those values.

    `sampled`: {"optimizer": index, "lr": float, "schedule": index, "swept": {axis: value}}.
    Raises:
        ValueError: a record that does not fit the study (an index out of range, an axis value
            it does not list).
    """
    opt = spec.optimizers[int(sampled["optimizer"])]
    sched = spec.schedules[int(sampled["schedule"])]
    axes = spec.sweep.axes()
    swept = dict(sampled.get("swept") or {})
    if set(swept) != set(axes) or any(swept[k] not in axes[k] for k in axes):
        raise ValueError(f"sampled sweep values {swept} do not fit the study's axes {axes}")
    lr = float(sampled["lr"])
    trial = _make_trial(spec, opt, lr, sched, _applicable(opt, swept), seed=slot.seed)
    info = {k: v for k, v in (slot.tpe or {}).items() if k != "placeholder"}
    return dataclasses.replace(trial, tpe=info)
