"""One trial inside a population: its learning rates, divergence guard, metric rows and result.

Everything here is host-side bookkeeping that a solo trial spreads over `ReferenceModule`,
`ScheduleAdapter` and `LRStudyCallback`; it reuses their pieces (build_optimizer for the param
groups and peak LRs, build_schedule, DivergenceGuard, the metric names) so that each member's rows
and outcome are the ones its solo run would produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lrstudy import names
from lrstudy.plan import Trial
from lrstudy.schedules.catalog import build_schedule, monitor_of, warmup_steps_from
from lrstudy.spec.optimizers import resolved_hparams
from lrstudy.track.divergence import DivergenceGuard
from lrstudy.train.data import Dataset
from lrstudy.train.models import layer_groups
from lrstudy.train.module import EPOCH_METRICS, TrialResult, summarize
from lrstudy.train.optim import PEAK_LR_KEY, build_optimizer

Row = tuple[str, float, int]


@dataclass
class MemberResult(TrialResult):
    """A population member's TrialResult plus what its solo callback would have tagged."""

    diverged_at: int | None = None  # tag lrstudy.diverged_at_step
    diverged_reason: str | None = None  # tag lrstudy.diverged_reason
    param_groups: list[str] = field(default_factory=list)  # tag lrstudy.param_groups, in order
    population_size: int = 1  # members that started together (train/seconds is shared wall time)
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch, as ReferenceModule
    # (rung epoch, step) where successive halving stopped it
    pruned_at: tuple[int, int] | None = None


class Member:
    """Trial `index` of a population and all of its per-trial state.

    Args:
        template: a model of the population's architecture (its layer groups name the LR groups).
        steps_per_epoch, total_steps: the population's (every member has the same).
    """

    def __init__(
        self, index: int, trial: Trial, template: nn.Module, steps_per_epoch: int, total_steps: int
    ) -> None:
        if trial.lr is None:
            raise ValueError(f"trial {trial.name} has no learning rate (resolve lr: auto first)")
        self.index, self.trial = index, trial
        self.pruned_at: tuple[int, int] | None = None  # set when successive halving stops it
        # Where it joined the population (its step 0), its own epoch, and its start time: a
        # member that took a freed slot is epochs behind the ones it trains beside.
        self.start, self.epoch, self.t0 = 0, 0, 0.0
        layers = layer_groups(template)
        # The solo optimizer itself says which groups exist and their peak LRs (lr x multiplier),
        # and raises the solo run's own error for settings torch rejects.
        optimizer, self.group_names = build_optimizer(
            template,
            trial.optimizer,
            trial.lr,
            trial.hparams,
            trial.layer_lr,
            layers if trial.layer_lr else None,
        )
        groups = optimizer.param_groups
        self.peaks = [float(g.get(PEAK_LR_KEY, g["lr"])) for g in groups]
        # Layer group i of the stacked model trains at the peak of the optimizer group holding it.
        # With layer_lr the optimizer's groups are the layer groups, in order; without, one "all".
        self.layer_to_group = list(range(len(layers))) if trial.layer_lr else [0] * len(layers)
        self.hparams = resolved_hparams(trial.optimizer, trial.hparams)
        self.schedule = build_schedule(
            trial.schedule,
            trial.schedule_args,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            warmup_steps=warmup_steps_from(trial.warmup, total_steps),
        )
        self.monitor = monitor_of(self.schedule)
        self.guard = DivergenceGuard(trial.divergence_factor)
        self.history: list[dict[str, float]] = []
        self._lrs: dict[int, list[float]] = {}  # step -> LR of each optimizer group
        self._constant_rows = self._per_group_constants(groups)

    def _per_group_constants(self, groups: list[dict[str, Any]]) -> list[list[tuple[str, float]]]:
        """Per group, the (name, value) rows the callback logs after the LR: momentum, decay."""
        n = len(groups)
        out = []
        for gname, group in zip(self.group_names, groups, strict=True):
            rows = []
            mom = group.get("momentum", group.get("betas", (None,))[0])
            if mom is not None:
                rows.append((names.group_metric(names.MOMENTUM, gname, n), float(mom)))
            if group.get("weight_decay"):
                wd = float(group["weight_decay"])
                rows.append((names.group_metric(names.WEIGHT_DECAY, gname, n), wd))
            out.append(rows)
        return out

    # --- learning rates ------------------------------------------------------------------------

    def epoch_lrs(self, start: int, steps: int) -> list[list[float]]:
        """Per step start..start+steps-1, the LR of every layer group (for the stacked update).

        Same arithmetic as ScheduleAdapter: peak * schedule(step), with the schedule as the
        member's own epoch-end observations (Plateau) have left it.
        """
        out = []
        for step in range(start, start + steps):
            multiplier = self.schedule(step)
            lrs = [peak * multiplier for peak in self.peaks]
            self._lrs[step] = lrs
            out.append([lrs[g] for g in self.layer_to_group])
        return out

    def step_rows(
        self, steps: list[int], grad_norms: list[float], losses: list[float]
    ) -> list[Row]:
        """The rows LRStudyCallback hands its sink for these steps, in its order."""
        n = len(self.group_names)
        rows: list[Row] = []
        for step in steps:
            lrs = self._lrs.pop(step)
            for j, gname in enumerate(self.group_names):
                rows.append((names.group_metric(names.LR, gname, n), lrs[j], step))
                rows.extend((key, value, step) for key, value in self._constant_rows[j])
        rows += [(names.GRAD_NORM, v, s) for s, v in zip(steps, grad_norms)]
        rows += [(names.TRAIN_LOSS, v, s) for s, v in zip(steps, losses)]
        return rows

    def check(self, steps: list[int], losses: list[float]) -> bool:
        """Feed the guard this chunk of losses; True if the member diverged in it."""
        return self.guard.check(zip(steps, losses))

    # --- epochs and the end --------------------------------------------------------------------

    def record_epoch(self, values: list[float], step: int, *, observe: bool = True) -> None:
        """The epoch's val/loss, val/acc, train/loss_epoch, train/acc at `step` steps done."""
        row = dict(zip(EPOCH_METRICS, values), step=step)
        self.history.append(row)
        if observe and self.monitor:  # a plateau cut applies from the next step, as in solo
            self.schedule.observe(row.get(self.monitor, row[names.VAL_LOSS]), step=step)

    def epoch_rows(self, epoch: int, seconds: float) -> list[Row]:
        """The callback's epoch rows: epoch, epoch/seconds, then the four epoch metrics."""
        row = self.history[-1]
        step = int(row["step"])
        out: list[Row] = [
            (names.EPOCH, float(epoch + 1), step),
            (names.EPOCH_SECONDS, seconds, step),
        ]
        return out + [(key, row[key], step) for key in EPOCH_METRICS]

    def result(
        self, model: nn.Module, data: Dataset, seconds: float, spe: int, population: int
    ) -> MemberResult:
        """Final metrics as run_trial reports them, from this member's history and weights."""
        metrics = summarize(self.history, self.trial, seconds)
        metrics.update(noise_accuracy(model, data, self.trial))
        diverged = self.guard.diverged_at is not None
        outcome = names.OUTCOME_DIVERGED if diverged else names.OUTCOME_OK
        if self.pruned_at is not None and not diverged:
            outcome = names.OUTCOME_PRUNED
        return MemberResult(
            outcome=outcome,
            metrics=metrics,
            total_steps=self.pruned_at[1]
            if outcome == names.OUTCOME_PRUNED
            else spe * self.trial.epochs,
            steps_per_epoch=spe,
            diverged_at=self.guard.diverged_at,
            diverged_reason=self.guard.reason,
            param_groups=list(self.group_names),
            population_size=population,
            history=list(self.history),
            pruned_at=self.pruned_at,
        )


@torch.no_grad()
def noise_accuracy(model: nn.Module, data: Dataset, trial: Trial) -> dict[str, float]:
    """Test accuracy under Gaussian input noise, drawn exactly as the solo trial draws it."""
    if not trial.evaluate_noise:
        return {}
    model = model.eval()
    first = next(model.parameters())
    device = first.device
    x, y = data.x_test.to(device=device, dtype=first.dtype), data.y_test.to(device)
    gen = torch.Generator(device=device).manual_seed(trial.seed)
    out = {}
    for sigma in trial.evaluate_noise:
        noisy = x + sigma * torch.randn(data.x_test.shape, generator=gen, device=device)
        acc = (model(noisy).argmax(1) == y).float().mean().item()
        out[f"{names.NOISE_ACC_PREFIX}{sigma:g}"] = acc
    return out
