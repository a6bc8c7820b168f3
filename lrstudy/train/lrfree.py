"""LR-free optimizers at training time: schedule-free's train/eval switch, BatchNorm at the eval point.

A schedule-free optimizer (package `schedulefree`) trains on one weight sequence (y) and is meant to
be evaluated on another, the running average (x). `optimizer.eval()` swaps x into the parameters,
`optimizer.train()` swaps y back; the package raises if `step()` runs in eval mode. BatchNorm's
running statistics were gathered on y, so at the eval point they are recomputed on x (the package's
README: a few training batches forward, no gradients, the model in train mode).

Everything here is duck-typed on the optimizer (a `train_mode` flag in its param groups), so the
plugin serves a user's own schedule-free optimizer the same way as lrstudy's trials.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning as L
import torch


def is_schedule_free(optimizer: Any) -> bool:
    """True for an optimizer with schedule-free's train/eval modes (any of the package's)."""
    opt = getattr(optimizer, "optimizer", optimizer)  # unwrap a LightningOptimizer
    groups = getattr(opt, "param_groups", None) or [{}]
    return callable(getattr(opt, "eval", None)) and "train_mode" in groups[0]


def set_mode(optimizer: Any, train: bool) -> bool:
    """Put a schedule-free optimizer in train (y) or eval (x, the average) mode; idempotent.

    Returns:
        Whether the optimizer is schedule-free (for the others nothing happens).
    """
    opt = getattr(optimizer, "optimizer", optimizer)
    if not is_schedule_free(opt):
        return False
    opt.train() if train else opt.eval()
    return True


_BN = (torch.nn.modules.batchnorm._BatchNorm,)


def has_batch_norm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in model.modules())


@torch.no_grad()
def recompute_batch_norm(model: torch.nn.Module, inputs: Iterable[torch.Tensor]) -> int:
    """Recompute BatchNorm running statistics on the current weights from these inputs.

    Cumulative averages (momentum=None) over all given batches, then each layer's momentum is
    put back; the model's train/eval flags are restored. Returns how many batches were used.
    """
    layers = [m for m in model.modules() if isinstance(m, _BN)]
    if not layers:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # equal weight to every batch: the statistics of x, not a blend
    model.train()
    n = 0
    try:
        for x in inputs:
            model(x)
            n += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, training in modes:
            m.training = training
    return n


class ScheduleFreeSwitch(L.Callback):
    """Evaluate a schedule-free optimizer's averaged weights: eval() before every validation,
    train() before every training epoch (and at fit start); a no-op for other optimizers.

    Args:
        bn_inputs: called at each eval point, returns the training inputs BatchNorm statistics
            are recomputed on (None: the statistics are left as they are).
    """

    def __init__(self, bn_inputs: Any = None) -> None:
        super().__init__()
        self.bn_inputs = bn_inputs

    def _all(self, trainer: L.Trainer, train: bool) -> bool:
        return any([set_mode(opt, train) for opt in trainer.optimizers])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._all(trainer, True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._all(trainer, True)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._all(trainer, False) and self.bn_inputs is not None:
            recompute_batch_norm(pl_module, self.bn_inputs())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Back to y at once: the next optimizer step may come before the next epoch starts
        # (validation every N steps), and step() refuses eval mode.
        self._all(trainer, True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The trained model is x, the average: what any evaluation after fit must see.
        if self._all(trainer, False) and self.bn_inputs is not None:
            recompute_batch_norm(pl_module, self.bn_inputs())
