"""LR range test: `find_lr` for any module, `find-lr` for a study's task, and `lr: auto`.

`find_lr` is a plain loop (no Trainer, no Lightning Tuner, so the semantics are ours and exact):
each step sets every param group to `ratio_g * lr`, calls `loss_fn(module, batch)` or else
`module.training_step(batch, i)` and uses its loss (a tensor, or the "loss" of a dict), backprops
and steps the optimizer. Afterwards parameters, buffers, gradients, train/eval flags, the optimizer
(state and param groups) and torch's RNG are restored exactly, so calling it changes nothing.
The smoothing, early stop and suggestion rules live, torch-free, in `rangetest_rules`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lrstudy.rangetest import rules

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


@dataclass(frozen=True)
class RangeTestResult:
    """One range test. "LR" means the reference LR; param group g ran at `group_ratios[g]` x it."""

    lrs: list[float]  # reference LR of every step run, the stopping step included
    losses: list[float]  # raw loss of every step run (non-finite ones as they came)
    smoothed: list[float]  # bias-corrected EMA of the finite losses; NaN where a loss was dropped
    suggestions: dict[str, float | None]  # rule -> LR (None: the rule has no answer)
    recommended: str | None  # the rule whose LR to use
    stop_index: int | None  # step that triggered the early stop (the rules read the points before)
    stop_reason: str | None
    group_ratios: list[float]
    lr_min: float
    lr_max: float
    steps: int
    mode: str
    seconds: float

    @property
    def recommended_lr(self) -> float | None:
        return self.suggestions[self.recommended] if self.recommended else None

    @property
    def spread(self) -> float | None:
        """max/min of the suggested LRs (1.0 when every rule agrees)."""
        return rules.spread(self.suggestions)

    @property
    def explanation(self) -> str:
        if self.recommended is None:
            return (
                "No suggestion: too few finite losses before the early stop; lower the minimum LR."
            )
        return rules.explain(self.recommended, self.recommended_lr)

    def figure(self):
        """Loss vs LR with the suggestions, as a matplotlib Figure (Agg, no pyplot state)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        end = len(self.lrs) if self.stop_index is None else self.stop_index + 1
        rules.draw_range_test(
            ax,
            self.lrs[:end],
            self.losses[:end],
            self.smoothed[:end],
            self.suggestions,
            self.recommended,
        )
        ax.set_title(f"LR range test ({self.mode}, {len(self.lrs)} of {self.steps} steps)")
        return fig


def find_lr(
    module: torch.nn.Module,
    train_batches: Iterable[Any],
    optimizer: torch.optim.Optimizer | str | None = None,
    *,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    steps: int = 200,
    mode: str = "exp",
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

    Raises:
        ValueError: a bad argument, an empty `train_batches`, or a module that has no optimizer.
        TypeError: the step did not produce a scalar loss tensor.
    """
    _check_ramp(lr_min, lr_max, steps, mode, ValueError)
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
    optimizer = _resolve_optimizer(module, optimizer)
    ratios = _group_ratios(optimizer)
    planned = rules.lr_ramp(lr_min, lr_max, steps, mode).tolist()
    tracker = rules.LossTracker(smoothing, stop_factor)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    sync_every = 1 if device.type == "cpu" else 16  # a per-step .item() would stall a GPU
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    pending: list[tuple[float, torch.Tensor]] = []
    stop_index, stop_reason = None, None
    saved = _Snapshot(module, optimizer)
    t0 = time.perf_counter()
    try:
        module.train()
        batches = iter(train_batches)
        one_shot = batches is train_batches
        with warnings.catch_warnings():
            # LightningModule.log warns once per call when there is no Trainer: expected here.
            warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
            for i, lr in enumerate(planned):
                batch = next(batches, _END)
                if batch is _END and not one_shot:
                    batches = iter(train_batches)
                    batch = next(batches, _END)
                    if batch is _END and i == 0:
                        raise ValueError("train_batches yielded no batches")
                if batch is _END:
                    stop_reason = f"train_batches ran out after {i} steps"
                    break
                for group, ratio in zip(optimizer.param_groups, ratios):
                    _set_lr(group, lr * ratio)
                optimizer.zero_grad(set_to_none=True)
                loss = _loss_of(module, _to_device(batch, device), i, loss_fn)
                loss.backward()
                optimizer.step()
                pending.append((lr, loss.detach()))
                if len(pending) >= sync_every:
                    stop_index = _record(pending, tracker, lrs, losses, smoothed)
                    pending = []
                    if stop_index is not None:
                        break
            if pending and stop_index is None:
                stop_index = _record(pending, tracker, lrs, losses, smoothed)
    finally:
        saved.restore()
    stop_reason = tracker.stop_reason or stop_reason
    skip = int(rules.SKIP_START * steps)
    x, y = rules.usable_curve(lrs, smoothed, stop_index=stop_index, skip=skip)
    suggestions = rules.suggest(x, y)
    return RangeTestResult(
        lrs=lrs,
        losses=losses,
        smoothed=smoothed,
        suggestions=suggestions,
        recommended=rules.recommend(suggestions),
        stop_index=stop_index,
        stop_reason=stop_reason,
        group_ratios=ratios,
        lr_min=float(lr_min),
        lr_max=float(lr_max),
        steps=int(steps),
        mode=mode,
        seconds=time.perf_counter() - t0,
    )


_END = object()


def _check_ramp(
    lr_min: float, lr_max: float, steps: int, mode: str, error: type[Exception]
) -> None:
    # Named for both callers: find_lr(lr_min=...) and `find-lr --min ...`.
    for name, v in (("lr_min (--min)", lr_min), ("lr_max (--max)", lr_max)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise error(f"{name} must be a finite number > 0, got {v!r}")
    if lr_min >= lr_max:
        raise error(f"lr_min (--min) {lr_min:g} must be below lr_max (--max) {lr_max:g}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 10:
        raise error(
            f"steps (--steps) must be an integer >= 10 (the rules need a curve), got {steps!r}"
        )
    if mode not in ("exp", "linear"):
        raise error(f"mode (--mode) must be 'exp' or 'linear', got {mode!r}")


def _record(pending, tracker, lrs, losses, smoothed) -> int | None:
    """Copy a chunk of losses to the host and feed the tracker; the stopping index, if any."""
    if len(pending) == 1:  # CPU: one value per step, no stack needed
        values = [pending[0][1].item()]
    else:
        values = torch.stack([v.float() for _, v in pending]).tolist()
    for (lr, _), v in zip(pending, values):
        lrs.append(lr)
        losses.append(v)
        smoothed.append(tracker.update(v))
        if tracker.stopped:
            return len(lrs) - 1
    return None


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


class _Snapshot:
    """Everything the test changes, copied before it and put back bit for bit after it."""

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.module, self.optimizer = module, optimizer
        # Parameters and *all* buffers (state_dict would miss non-persistent ones).
        self.tensors = [(t, t.detach().clone()) for t in (*module.parameters(), *module.buffers())]
        self.grads = [
            (p, None if p.grad is None else p.grad.detach().clone()) for p in module.parameters()
        ]
        self.optim_state = copy.deepcopy(optimizer.state_dict())
        self.modes = [(m, m.training) for m in module.modules()]
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        with torch.no_grad():
            for t, saved in self.tensors:
                t.copy_(saved)
        for p, g in self.grads:
            p.grad = g
        self.optimizer.load_state_dict(self.optim_state)
        for m, training in self.modes:
            m.training = training
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def settings_key(settings: dict[str, Any]) -> str:
    """Stable hash of a range test's settings (tag lrstudy.range_test_key): equal key, equal test."""
    blob = json.dumps(settings, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

