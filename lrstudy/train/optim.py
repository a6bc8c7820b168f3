"""The torch side of optimization: optimizer, param groups (layer-wise LR) and the schedule adapter.

Which optimizers exist and their defaults live in the torch-free `lrstudy.spec.optimizers`;
schedules are torch-free functions in `lrstudy.schedules`. This module is where both meet torch, and
`ScheduleAdapter` is the only place a schedule touches an optimizer's learning rates.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from lrstudy.errors import UserInputError
from lrstudy.schedules.catalog import Schedule, monitor_of
from lrstudy.spec.optimizers import missing_extra, optimizer_info, resolved_hparams

PEAK_LR_KEY = "lrstudy_peak_lr"  # per param group: the LR its schedule multiplier applies to


def _group_multipliers(layer_lr: dict | list[float], names: list[str]) -> list[float]:
    """Per-group LR multipliers, input -> output order; the last group trains at the spec LR."""
    n = len(names)
    if isinstance(layer_lr, dict):
        if set(layer_lr) != {"decay"}:
            raise ValueError(f"layer_lr must be {{'decay': d}} or a list, got {layer_lr!r}")
        d = layer_lr["decay"]
        if isinstance(d, bool) or not isinstance(d, int | float) or not d > 0:
            raise ValueError(f"layer_lr decay={d!r} is not allowed: must be a number > 0")
        # Earlier layers get geometrically smaller LRs (ULMFiT's discriminative fine-tuning).
        return [float(d) ** (n - 1 - i) for i in range(n)]
    if len(layer_lr) != n:
        raise ValueError(
            f"layer_lr has {len(layer_lr)} multipliers but the model has {n} layer groups "
            f"({', '.join(names)})"
        )
    for m in layer_lr:
        if isinstance(m, bool) or not isinstance(m, int | float) or not m >= 0:
            raise ValueError(f"layer_lr multiplier {m!r} is not allowed: must be a number >= 0")
    return [float(m) for m in layer_lr]


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    hparams: dict[str, Any],
    layer_lr: dict | list[float] | None = None,
    groups: list[tuple[str, list[nn.Parameter]]] | None = None,
) -> tuple[torch.optim.Optimizer, list[str]]:
    """Optimizer `name` over `model` at peak LR `lr`, with one param group per layer group.

    Args:
        hparams: user-given hyperparameters (keys already validated), merged over catalog defaults.
        layer_lr: None for one group "all"; {"decay": d} for group i of n at lr * d ** (n-1-i);
            or a list with one multiplier per group.
        groups: (name, params) in input -> output order; needed with layer_lr, and used
            without it when a user named the groups (each then at `lr`).

    Returns:
        The optimizer (every group carries "name" and "lrstudy_peak_lr") and the group names.

    Raises:
        ValueError: unknown optimizer, bad layer_lr, or groups that miss trainable parameters.
    """
    cls = optimizer_class(name)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if layer_lr is None and not groups:
        named = [("all", trainable)]
        multipliers = [1.0]
    else:
        if not groups:
            raise ValueError("layer_lr needs the model's layer groups, but none were given")
        named = [(g, [p for p in ps if p.requires_grad]) for g, ps in groups]
        # Groups a user named train at the spec LR unless layer_lr scales them.
        multipliers = (
            _group_multipliers(layer_lr, [g for g, _ in named]) if layer_lr else [1.0] * len(named)
        )
        covered = {id(p) for _, ps in named for p in ps}
        missing = sum(id(p) not in covered for p in trainable)
        if missing:  # those parameters would silently never train
            raise ValueError(f"layer groups leave {missing} trainable parameter tensors out")
    param_groups = [
        {"params": ps, "name": g, "lr": lr * m, PEAK_LR_KEY: lr * m}
        for (g, ps), m in zip(named, multipliers, strict=True)
    ]
    optimizer = cls(param_groups, lr=lr, **resolved_hparams(name, hparams))
    if optimizer_info(name).lr_free == "schedule_free":
        optimizer.train()  # built ready to step (the package refuses to step in eval mode)
    return optimizer, [g for g, _ in named]


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The class optimizer `name` is built from: torch.optim's, or an LR-free package's.

    Raises:
        UserInputError: the package of an LR-free optimizer is not installed (how to install it).
    """
    info = optimizer_info(name)
    missing = missing_extra(name)
    if missing:
        raise UserInputError(missing)
    return getattr(importlib.import_module(info.module), info.torch_class)


def momentum_of(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> float | None:
    """Momentum of one param group: `momentum` (SGD, RMSprop) or betas[0] (Adam family).

    Returns None for optimizers without either (Adagrad, Adadelta), so callers log nothing.
    """
    values = {**optimizer.defaults, **group}
    # float() also reads a one-element tensor (optimizers built with tensor hyperparameters).
    if "betas" in values:
        return float(values["betas"][0])
    if "momentum" in values:
        return float(values["momentum"])
    return None


class ScheduleAdapter(LRScheduler):
    """The one bridge from a Schedule to torch: each group's lr = its peak LR * schedule(step).

    After construction lr == peak * schedule(0); after k calls of step(), peak * schedule(k). It is
    an LRScheduler, so Lightning accepts it in configure_optimizers (use interval="step"). The peak
    is the group's "lrstudy_peak_lr" (set by build_optimizer), else its lr at construction.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule) -> None:
        self.schedule = schedule
        self.peak_lrs = [float(g.get(PEAK_LR_KEY, g["lr"])) for g in optimizer.param_groups]
        super().__init__(optimizer)

    @property
    def monitor(self) -> str | None:
        """Metric the schedule wants passed to `observe` each epoch end, or None."""
        return monitor_of(self.schedule)

    def get_lr(self) -> list[float]:
        multiplier = self.schedule(self.last_epoch)
        return [peak * multiplier for peak in self.peak_lrs]

    def observe(self, value: float) -> None:
        """Pass an epoch-end metric to a Plateau-like schedule; a no-op for the others.

        A reduction applies from the next optimizer step, so the LRs are re-set here at once
        rather than at the next step().
        """
        if monitor_of(self.schedule) is None:
            return
        self.schedule.observe(value, step=self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Scheduler state plus the schedule's own (Plateau), without the schedule function,
        which is rebuilt from the spec and cannot be pickled into a checkpoint."""
        state = {k: v for k, v in vars(self).items() if k not in ("optimizer", "schedule")}
        if hasattr(self.schedule, "state_dict"):
            state["schedule_state"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        schedule_state = state.pop("schedule_state", None)
        vars(self).update(state)
        if schedule_state is not None:
            self.schedule.load_state_dict(schedule_state)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> ScheduleAdapter:
    """The ScheduleAdapter driving `optimizer` by `schedule` (call its step() once per batch)."""
    return ScheduleAdapter(optimizer, schedule)
