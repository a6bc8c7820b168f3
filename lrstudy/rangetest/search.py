"""LR range test on any module: `find_lr`, which leaves the module exactly as it found it.

`find_lr` is a plain loop (no Trainer, no Lightning Tuner, so the semantics are ours and exact):
each step sets every param group to `ratio_g * lr`, calls `loss_fn(module, batch)` or else
`module.training_step(batch, i)` and uses its loss (a tensor, or the "loss" of a dict), backprops
and steps the optimizer. Afterwards parameters, buffers, gradients, train/eval flags, the optimizer
(state and param groups) and torch's RNG are restored exactly, so calling it changes nothing.
The smoothing, early stop and suggestion rules live, torch-free, in `rules`, the ramp's defaults
in `ramp`, the returned `RangeTestResult` in `result` and its figure in `figure`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lrstudy.rangetest import rules
from lrstudy.rangetest.ramp import RAMP, Ramp
from lrstudy.rangetest.result import RangeTestResult
from lrstudy.rangetest.snapshot import Snapshot

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


def find_lr(
    module: torch.nn.Module,
    train_batches: Iterable[Any],
    optimizer: torch.optim.Optimizer | str | None = None,
    *,
    lr_min: float = RAMP.lr_min,
    lr_max: float = RAMP.lr_max,
    steps: int = RAMP.steps,
    mode: str = RAMP.mode,
    smoothing: float = rules.SMOOTHING,
    stop_factor: float | None = rules.STOP_FACTOR,
    loss_fn: LossFn | None = None,
) -> RangeTestResult:
    """Run an LR range test on `module` and restore it (and the optimizer) exactly afterwards.

    Args:
        module: any `nn.Module`; without `loss_fn` it needs a `training_step(batch, i)` returning
            the loss (a LightningModule with automatic optimization that does not need a Trainer).
        train_batches: an iterable of batches, re-iterated when exhausted (a one-shot iterator
            ends the test early); batches are moved to the module's device.
        optimizer: an optimizer over the module's parameters; a name from lrstudy's catalog
            (built with its defaults, one group); or None for the first optimizer of
            `module.configure_optimizers()` (its schedulers are ignored).
        lr_min, lr_max, steps, mode: the ramp, "exp" (geometric, default) or "linear".
        smoothing: EMA factor of the loss (0 = none); stop_factor: stop when the smoothed loss
            exceeds this x its best (None = run all steps).
        loss_fn: `loss_fn(module, batch) -> loss` instead of `training_step`.

    The reference LR is `optimizer.defaults["lr"]` (the `lr=` the optimizer was built with: the
    trial LR for lrstudy's optimizers), else the largest group LR; every group keeps its ratio to it.

    Returns:
        A `RangeTestResult`; its repr is one short line. What to read:
        `result.recommended_lr` (the LR to use, None when no rule had an answer),
        `result.recommended` (the *name* of the rule it came from, e.g. "min_div10"),
        `result.explanation` (what that LR is and why, after a line per warning),
        `result.warnings` (why the recommendation may not be trusted, e.g. too few steps for the
        EMA smoothing to follow the LR: fewer than 2 / (1 - smoothing) = 100 steps by default;
        empty when none), `result.suggestions` (every rule's LR) and `result.figure()`.

    Raises:
        ValueError: a bad argument, an empty `train_batches`, or a module that has no optimizer.
        TypeError: the step did not produce a scalar loss tensor.
    """
    ramp = Ramp(lr_min, lr_max, steps, mode).check(ValueError)
    _check_arguments(module, smoothing, stop_factor, loss_fn)
    optimizer = _resolve_optimizer(module, optimizer)
    ratios = _group_ratios(optimizer)
    curve = _Curve(rules.LossTracker(smoothing, stop_factor))
    saved = Snapshot(module, optimizer)
    t0 = time.perf_counter()
    try:
        ran_out = _run_ramp(module, optimizer, ratios, ramp, train_batches, loss_fn, curve)
    finally:
        saved.restore()
    return _result(curve, ratios, ramp, curve.tracker.stop_reason or ran_out, t0)


def _check_arguments(
    module: torch.nn.Module, smoothing: float, stop_factor: float | None, loss_fn: LossFn | None
) -> None:
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    if stop_factor is not None and not stop_factor > 1:
        raise ValueError(f"stop_factor must be > 1 or None, got {stop_factor!r}")
    if loss_fn is None and not hasattr(module, "training_step"):
        raise ValueError(f"{type(module).__name__} has no training_step; pass loss_fn")
    if loss_fn is None and getattr(module, "automatic_optimization", True) is False:
        raise ValueError(
            "the module steps its optimizers itself (manual optimization); pass loss_fn"
        )


@dataclass
class _Curve:
    """The points recorded so far, fed through the tracker that smooths and decides the stop."""

    tracker: rules.LossTracker
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stop_index: int | None = None  # the step that triggered the early stop

    def record(self, pending: list[tuple[float, torch.Tensor]]) -> bool:
        """Copy a chunk of (lr, loss) to the host and feed the tracker; True once it stops."""
        if len(pending) == 1:  # CPU: one value per step, no stack needed
            values = [pending[0][1].item()]
        else:
            values = torch.stack([v.float() for _, v in pending]).tolist()
        for (lr, _), v in zip(pending, values):
            self.lrs.append(lr)
            self.losses.append(v)
            self.smoothed.append(self.tracker.update(v))
            if self.tracker.stopped:
                self.stop_index = len(self.lrs) - 1
                return True
        return False


def _run_ramp(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ratios: list[float],
    ramp: Ramp,
    train_batches: Iterable[Any],
    loss_fn: LossFn | None,
    curve: _Curve,
) -> str | None:
    """Step through the ramp into `curve`; why it ended early when the batches ran out, else None."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    sync_every = 1 if device.type == "cpu" else 16  # a per-step .item() would stall a GPU
    planned = rules.lr_ramp(ramp.lr_min, ramp.lr_max, ramp.steps, ramp.mode).tolist()
    pending: list[tuple[float, torch.Tensor]] = []
    done = 0
    module.train()
    # A schedule-free optimizer refuses to step in eval mode (the snapshot puts its mode back).
    from lrstudy.train.lrfree import set_mode

    set_mode(optimizer, True)
    with warnings.catch_warnings():
        # LightningModule.log warns once per call when there is no Trainer: expected here.
        warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
        for lr, batch in zip(planned, _endless(train_batches)):
            batch = _to_device(batch, device)
            pending.append((lr, _step(module, optimizer, ratios, lr, batch, done, loss_fn)))
            done += 1
            if len(pending) >= sync_every:
                stopped, pending = curve.record(pending), []
                if stopped:
                    return None
        if pending:
            curve.record(pending)
    return f"train_batches ran out after {done} steps" if done < len(planned) else None


def _step(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ratios: list[float],
    lr: float,
    batch: Any,
    i: int,
    loss_fn: LossFn | None,
) -> torch.Tensor:
    """One optimizer step with group g at `ratios[g] * lr`; the loss, still on the device."""
    for group, ratio in zip(optimizer.param_groups, ratios):
        _set_lr(group, lr * ratio)
    optimizer.zero_grad(set_to_none=True)
    loss = _loss_of(module, batch, i, loss_fn)
    loss.backward()
    optimizer.step()
    return loss.detach()


_END = object()


def _endless(train_batches: Iterable[Any]) -> Iterator[Any]:
    """The batches, started again whenever they run out; a one-shot iterator just ends.

    Raises:
        ValueError: a re-iterable `train_batches` that yields no batch at all.
    """
    batches = iter(train_batches)
    one_shot = batches is train_batches
    first = True
    while True:
        batch = next(batches, _END)
        if batch is _END and not one_shot:
            batches = iter(train_batches)
            batch = next(batches, _END)
            if batch is _END and first:
                raise ValueError("train_batches yielded no batches")
        if batch is _END:
            return
        first = False
        yield batch


def _result(
    curve: _Curve, ratios: list[float], ramp: Ramp, stop_reason: str | None, t0: float
) -> RangeTestResult:
    """Apply the rules to the recorded curve (after the first SKIP_START of the planned steps)."""
    skip = int(rules.SKIP_START * ramp.steps)
    x, y = rules.usable_curve(curve.lrs, curve.smoothed, stop_index=curve.stop_index, skip=skip)
    suggestions = rules.suggest(x, y)
    fell = rules.drop(y) if len(y) >= rules.MIN_POINTS else None
    recommended = rules.recommend(suggestions, flat=rules.is_flat(y))
    end = curve.stop_index if curve.stop_index is not None else len(curve.lrs)
    doubts = rules.trust_warnings(
        steps=ramp.steps, end=end, smoothing=curve.tracker.beta, recommended=recommended
    )
    return RangeTestResult(
        lrs=curve.lrs,
        losses=curve.losses,
        smoothed=curve.smoothed,
        suggestions=suggestions,
        recommended=recommended,
        stop_index=curve.stop_index,
        stop_reason=stop_reason,
        group_ratios=ratios,
        lr_min=float(ramp.lr_min),
        lr_max=float(ramp.lr_max),
        steps=int(ramp.steps),
        mode=ramp.mode,
        seconds=time.perf_counter() - t0,
        drop=fell,
        warnings=doubts,
    )


def _loss_of(module: torch.nn.Module, batch: Any, i: int, loss_fn: LossFn | None) -> torch.Tensor:
    out = loss_fn(module, batch) if loss_fn is not None else module.training_step(batch, i)
    loss = out.get("loss") if isinstance(out, Mapping) else out
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        what = "loss_fn" if loss_fn is not None else "training_step"
        raise TypeError(
            f"{what} must return a scalar loss tensor (or a dict with 'loss'), got {type(out).__name__}"
        )
    return loss if loss.dim() == 0 else loss.reshape(())


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(b, device) for b in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(b, device) for b in batch)
    return batch


def _set_lr(group: dict, lr: float) -> None:
    if isinstance(group["lr"], torch.Tensor):  # e.g. capturable optimizers keep a tensor LR
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def _resolve_optimizer(module: torch.nn.Module, optimizer: Any) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        from lrstudy.train.optim import build_optimizer

        return build_optimizer(module, optimizer, 1e-3, {})[0]
    if optimizer is not None:
        raise ValueError(
            f"optimizer must be a torch optimizer, a name or None, got {type(optimizer).__name__}"
        )
    if not hasattr(module, "configure_optimizers"):
        raise ValueError(f"{type(module).__name__} has no configure_optimizers; pass an optimizer")
    found = _first_optimizer(module.configure_optimizers())
    if found is None:
        raise ValueError("configure_optimizers() returned no optimizer; pass one")
    return found


def _first_optimizer(conf: Any) -> torch.optim.Optimizer | None:
    """The first optimizer in any of the shapes Lightning accepts from configure_optimizers."""
    if isinstance(conf, torch.optim.Optimizer):
        return conf
    if isinstance(conf, Mapping):
        return _first_optimizer(conf.get("optimizer"))
    if isinstance(conf, list | tuple):
        for item in conf:
            found = _first_optimizer(item)
            if found is not None:
                return found
    return None


def _group_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    group_lrs = [float(g["lr"]) for g in optimizer.param_groups]
    ref = optimizer.defaults.get("lr")
    ref = float(ref) if ref is not None else 0.0
    if not (math.isfinite(ref) and ref > 0):
        ref = max(group_lrs)
    if not ref > 0:
        raise ValueError("every param group has LR 0: there is nothing to scale")
    return [lr / ref for lr in group_lrs]
