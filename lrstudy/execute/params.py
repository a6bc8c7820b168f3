"""The params a study's runs carry: every resolved setting, readable without the spec file.

MLflow params cannot change once logged, so a rerun of a trial logs exactly these again.
"""

from __future__ import annotations

from typing import Any

from lrstudy.plan import Trial
from lrstudy.spec import StudySpec


def study_params(spec: StudySpec, trials: list[Trial], data: Any) -> dict[str, Any]:
    """Parent-run params: what ran, readable by the report without the spec file."""
    from lrstudy.train.module import steps_per_epoch  # torch: only where a study runs

    metric, mode = spec.rank_metric
    common = {
        "study": spec.name,
        "description": spec.description,
        "epochs": spec.train.epochs,
        "batch_size": spec.train.batch_size,
        "search": spec.search.method,
        "seeds": list(spec.seeds),
        "n_trials": len(trials),
        "optimizers": [o.name for o in spec.optimizers],
        "schedules": [s.label for s in spec.schedules],
        "sweep": {k: list(v) for k, v in spec.sweep.axes().items()},
    }
    if spec.search.method == "tpe":  # for the report's Search section
        common["tpe"] = {"trials": spec.search.trials, "seed": spec.search.seed,
                         "startup": spec.search.tpe_startup}  # fmt: skip
    if trials[0].halving:  # eta and the rung epochs, for the report's Search section
        common["halving"] = trials[0].halving
    user = {"task_kind": spec.task.kind, "metric": metric, "metric_mode": mode}
    first = trials[0]
    if spec.task.kind == "module":  # the user's classes and data: no tensors to count here
        return {
            **common,
            **user,
            # under the reference tasks' names, so the report's header shows them
            "model": first.model,
            "dataset": first.dataset or "(the module's own loaders)",
            **{f"init.{k}": v for k, v in first.model_args.items()},
        }
    spe = steps_per_epoch(len(data.x_train), first.batch_size)
    target = spec.train.target
    return {
        **common,
        "dataset": first.dataset,
        "model": first.model,
        "model_args": first.model_args,
        "target_metric": target.metric if target else "",
        "target_value": target.value if target else "",
        "target_mode": target.resolved_mode if target else "",
        "evaluate_noise": list(spec.evaluate.noise),
        "steps_per_epoch": spe,
        "total_steps": spe * spec.train.epochs,
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        "num_classes": data.num_classes,  # the report's "at chance" line is 1 / num_classes
        **({**user, "loss": first.loss} if spec.task.kind == "model" else {}),
    }


def trial_params(trial: Trial, lr: float, spe: int | None) -> dict[str, Any]:
    """Child-run params: every resolved setting of the trial (optimizer defaults included).

    `spe` (steps per epoch) is None for a user LightningModule, whose step counts are known only
    once Lightning has its data: the executor logs them after training.
    """
    params: dict[str, Any] = {
        "optimizer": trial.optimizer,
        "lr": lr,
        "schedule": trial.schedule,
        "schedule_label": trial.schedule_label,
        "warmup": trial.warmup if trial.warmup is not None else 0,
        "batch_size": trial.batch_size,
        "epochs": trial.epochs,
        "seed": trial.seed,
        "train_fraction": trial.train_fraction,
        "dataset": trial.dataset,
        "model": trial.model,
        "model_args": trial.model_args,
        "data_args": trial.data_args,
        "layer_lr": trial.layer_lr if trial.layer_lr is not None else "none",
        "divergence_factor": trial.divergence_factor,
        "target_metric": trial.target["metric"] if trial.target else "",
        "target_value": trial.target["value"] if trial.target else "",
    }
    from lrstudy.schedules.catalog import warmup_steps_from

    if spe is not None:
        params["steps_per_epoch"] = spe
        params["total_steps"] = spe * trial.epochs
        params["warmup_steps"] = warmup_steps_from(trial.warmup, spe * trial.epochs)
    if trial.task_kind != "reference":  # the user's classes: each init arg a param of its own
        params["task_kind"] = trial.task_kind
        params["loss"] = trial.loss if trial.task_kind == "model" else "module"
        params.update({f"init.{k}": v for k, v in trial.model_args.items()})
        params.update({f"data.{k}": v for k, v in trial.data_args.items()})
        if trial.param_groups:
            params["param_groups"] = trial.param_groups
    params.update({f"schedule.{k}": v for k, v in trial.schedule_args.items()})
    params.update({f"opt.{k}": v for k, v in trial.hparams.items()})
    if "momentum" in trial.swept:
        params["momentum"] = trial.swept["momentum"]
    return params
