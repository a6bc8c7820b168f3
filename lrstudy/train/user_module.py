"""Train stage for a user's LightningModule (task.module) and DataModule: one trial. No MLflow.

The study owns the optimizer and the schedule, as LightningCLI does when it is given an
optimizer: the module's own `configure_optimizers` is replaced on the instance by one that builds
the trial's optimizer (param groups named by the user: `task.param_groups` or the module's
`lrstudy_param_groups()`), with its LR schedule stepped every optimizer step. A module with
manual optimization gets the same optimizer and scheduler from `self.optimizers()` /
`self.lr_schedulers()`; if it does not step the scheduler, lrstudy does after each optimizer step,
so the schedule applies either way and the logged LR is always the applied one.
"""

from __future__ import annotations

import functools
import math
import time
import types
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from lrstudy import names
from lrstudy.plan import Trial
from lrstudy.schedules.catalog import build_schedule, monitor_of, warmup_steps_from
from lrstudy.train.models import named_groups
from lrstudy.train.module import TrialResult, trainer_options
from lrstudy.train.optim import build_optimizer, make_scheduler


@dataclass
class ModuleTask:
    """What preflight resolved for a task.module study: the classes (or API factories)."""

    module: Any
    datamodule: Any | None
    batch_size_arg: bool  # the DataModule takes `batch_size` (a swept batch size goes there)
    overrides_optimizers: bool  # the module defines its own configure_optimizers (replaced)
    manual: bool  # the module uses manual optimization

    def build_module(self, init_args: dict[str, Any]) -> L.LightningModule:
        return self.module(**init_args)

    def build_datamodule(
        self, init_args: dict[str, Any], batch_size: int | None
    ) -> L.LightningDataModule | None:
        if self.datamodule is None:
            return None
        args = dict(init_args)
        if batch_size is not None and self.batch_size_arg:
            args["batch_size"] = batch_size
        return self.datamodule(**args)


def replacement_note(trials: list[Trial], task: ModuleTask) -> str:
    """One line for `plan`, `run` and the runs' tag: what the study puts in place of the
    module's own optimizer set-up (LightningCLI warns likewise when it overrides one)."""
    label = getattr(task.module, "__name__", "the module")
    opts = ", ".join(dict.fromkeys(t.optimizer for t in trials))
    scheds = ", ".join(dict.fromkeys(t.schedule_label for t in trials))
    own = "its own configure_optimizers is replaced by" if task.overrides_optimizers else "gets"
    how = (
        " (manual optimization: through self.optimizers() / self.lr_schedulers())"
        if task.manual
        else ""
    )
    return f"{label}: {own} the study's optimizer ({opts}) and LR schedule ({scheds}){how}"


def install_optimizer(module: L.LightningModule, trial: Trial, lr: float) -> None:
    """Replace the module's configure_optimizers with the trial's optimizer and schedule.

    Bound on the instance with `update_wrapper`, as LightningCLI does, so Lightning still sees an
    overridden hook. The schedule needs the run's length, which Lightning knows only once the
    data are attached (`estimated_stepping_batches`), so it is built inside the hook.
    """
    original = type(module).configure_optimizers

    def configure_optimizers(self: L.LightningModule) -> dict[str, Any]:
        groups = named_groups(self, trial.param_groups)
        if trial.layer_lr and groups is None:
            from lrstudy.train.models import layer_groups

            groups = layer_groups(self)
        optimizer, group_names = build_optimizer(
            self, trial.optimizer, lr, trial.hparams, trial.layer_lr, groups
        )
        self.lrstudy_group_names = group_names
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "the number of training steps is unknown (an iterable data loader without a "
                "length): lrstudy's schedules need it; give the loader a __len__"
            )
        total = max(1, int(total))
        schedule = build_schedule(
            trial.schedule,
            trial.schedule_args,
            total_steps=total,
            steps_per_epoch=max(1, total // trial.epochs),
            warmup_steps=warmup_steps_from(trial.warmup, total),
        )
        scheduler = make_scheduler(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    if original is not L.LightningModule.configure_optimizers:
        # LightningCLI's way: Lightning then still sees the module's hook as overridden. A module
        # without one keeps a plain function, which is an override by itself (update_wrapper
        # would point Lightning at the base class's empty hook).
        functools.update_wrapper(configure_optimizers, original)
    module.configure_optimizers = types.MethodType(configure_optimizers, module)


class ScheduleKeeper(L.Callback):
    """Keeps the study's schedule in step: catch-up steps under manual optimization, and the
    epoch-end value a plateau schedule watches (its monitor, else the rank metric, else the
    epoch's mean training loss)."""

    def __init__(self, rank_metric: str, tracker: Any) -> None:
        self.rank_metric = rank_metric
        self.tracker = tracker  # the LRStudyCallback: its epoch_losses
        self.steps = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.automatic_optimization or not trainer.lr_scheduler_configs:
            return
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        while scheduler.last_epoch < self.steps:
            scheduler.step()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.lr_scheduler_configs:
            return
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        monitor = monitor_of(getattr(scheduler, "schedule", None))
        if not monitor:
            return
        metrics = trainer.callback_metrics
        for key in (monitor, self.rank_metric):
            if key in metrics:
                scheduler.observe(float(metrics[key]))
                return
        if self.tracker.epoch_losses:
            scheduler.observe(self.tracker.epoch_losses[-1])


def run_module_trial(
    trial: Trial,
    task: ModuleTask,
    callbacks: list[L.Callback],
    lr: float,
    rank_metric: str,
) -> TrialResult:
    """Train one trial of a user's LightningModule to the end (or until divergence stops it).

    Each seed is set before the module is built. Raises whatever the user's code raises (the
    executor fails that trial, with its traceback, and the study goes on).
    """
    from lrstudy.track.callback import LRStudyCallback
    from lrstudy.track.module_logger import ModuleMetricsLogger

    torch.set_num_threads(trial.threads)
    L.seed_everything(trial.seed, verbose=False)
    module = task.build_module(trial.model_args)
    datamodule = task.build_datamodule(trial.data_args, trial.batch_size)
    install_optimizer(module, trial, lr)
    tracker = next(cb for cb in callbacks if isinstance(cb, LRStudyCallback))
    logger = ModuleMetricsLogger(tracker)
    keeper = ScheduleKeeper(rank_metric, tracker)
    trainer = L.Trainer(
        logger=logger,
        log_every_n_steps=1,  # every value the module logs, at the step it logs it
        callbacks=[*callbacks, keeper],
        **trainer_options(trial),
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - t0
    metrics = {names.TRAIN_SECONDS: seconds}
    losses = tracker.epoch_losses
    if losses:
        metrics[names.FINAL_TRAIN_LOSS] = losses[-1]
    final = logger.last.get(rank_metric)
    if final is None and rank_metric == names.TRAIN_LOSS_EPOCH and losses:
        final = losses[-1]
    diverged = any(getattr(cb, "diverged_at", None) is not None for cb in callbacks)
    total = (
        int(trainer.estimated_stepping_batches)
        if math.isfinite(trainer.estimated_stepping_batches)
        else 0
    )
    return TrialResult(
        outcome=names.OUTCOME_DIVERGED if diverged else names.OUTCOME_OK,
        metrics=metrics,
        total_steps=total,
        steps_per_epoch=int(trainer.num_training_batches)
        if math.isfinite(trainer.num_training_batches)
        else 0,
        metric_value=final,
        available=sorted(logger.last),
    )
