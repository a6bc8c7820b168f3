"""What a plugin run's params and metric names are: the run's configuration, and user metric
names as MLflow accepts them (used by `LRStudyCallback`).

A user's own training loop logs through the callback without lrstudy's spec: the optimizer, its
param groups and its scheduler say what the configuration is, so the report can group the runs
by configuration and seed like a study's trials.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from lrstudy.track.step_size import STATE_KEYS

# Group keys that are not hyperparameters: the tensors, names, and what schedulers keep there.
_NOT_HPARAMS = {"params", "lr", "name", "initial_lr", "lrstudy_peak_lr", "foreach", "fused",
                "capturable", "differentiable", "maximize"}  # fmt: skip


def optimizer_params(
    opt: torch.optim.Optimizer, group_names: list[str], scheduler: Any, index: int = 0
) -> dict[str, Any]:
    """A plugin run's optimizer as params: class name, initial LR (per group when several),
    the other hyperparameters of its last group, and the scheduler's class name."""
    suffix = str(index) if index else ""
    groups = opt.param_groups
    initial = [float(g.get("initial_lr", g["lr"])) for g in groups]
    out: dict[str, Any] = {f"optimizer{suffix}": type(opt).__name__, f"lr{suffix}": initial[-1]}
    if len(groups) > 1:
        out.update({f"lr{suffix}/{n}": lr for n, lr in zip(group_names, initial)})
    last = {**opt.defaults, **groups[-1]}
    for k, v in sorted(last.items()):
        if (
            k in _NOT_HPARAMS
            or k in STATE_KEYS
            or not isinstance(v, int | float | bool | str | tuple | list | None)
        ):
            continue
        out[f"opt{suffix}.{k}"] = list(v) if isinstance(v, tuple) else v
    out[f"schedule{suffix}"] = type(scheduler).__name__ if scheduler is not None else "none"
    return out


_KEYS: dict[str, str] = {}


def metric_key(name: str) -> str:
    """A user's metric name as MLflow accepts it: characters it refuses (`acc@1`) become `_`, and
    a name that would not be a unique path (`a//b`, `./x`) is normalised. One bad name must not
    lose a whole batch of metrics (the sink writes them together)."""
    if name not in _KEYS:
        from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

        key = name
        if not validate_param_and_metric_name(key):
            key = re.sub(r"[^\w\-. /:]", "_", key)
        if path_not_unique(key):
            key = "/".join(p for p in key.split("/") if p not in ("", ".", "..")) or "metric"
        _KEYS[name] = key
    return _KEYS[name]


def config_params(
    trainer: Any, groups: dict[int, list[str]], extra: dict[str, Any]
) -> dict[str, Any]:
    """A plugin run's configuration: every optimizer's `optimizer_params` (groups: id(optimizer)
    -> its group names), the seed of Lightning's `seed_everything` when set, and `extra`."""
    params: dict[str, Any] = {}
    scheds = {id(c.scheduler.optimizer): c.scheduler for c in trainer.lr_scheduler_configs}
    for j, opt in enumerate(trainer.optimizers):
        params.update(optimizer_params(opt, groups[id(opt)], scheds.get(id(opt)), j))
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None:
        params["seed"] = seed
    return params | extra


def group_names(optimizers: list[torch.optim.Optimizer]) -> list[list[str]]:
    """Metric suffix per param group: its "name" if set, else pg<i>; prefixed when ambiguous."""
    raw = [
        [str(g.get("name") or f"pg{i}") for i, g in enumerate(o.param_groups)] for o in optimizers
    ]
    flat = [n for gs in raw for n in gs]
    if len(set(flat)) == len(flat):
        return raw
    return [
        [f"{type(o).__name__.lower()}{j}_{n}" for n in gs]
        for j, (o, gs) in enumerate(zip(optimizers, raw))
    ]
