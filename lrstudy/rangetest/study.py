"""Range tests on a study's own task: `python -m lrstudy find-lr` and `lr: auto`.

Both build the model, optimizer and batches exactly as a trial does (same model, param groups with
layer-wise LR, optimizer hyperparameters, batch size, seed) and run `find_lr` with a plain
cross-entropy loss. Each test is logged as its own run (kind=range_test) tagged with a key that
hashes every setting the result depends on; `lr: auto` reuses the newest run with its key, so a
resumed study gets the same LR, and a `find-lr` run made by hand beforehand is reused as well.
The range test runs on the full training split, whatever a trial's `train_fraction`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from lrstudy import names
from lrstudy.errors import UserInputError
from lrstudy.keys import stable_hash
from lrstudy.plan import Trial
from lrstudy.rangetest import rules
from lrstudy.rangetest.ramp import RAMP, Ramp
from lrstudy.rangetest.result import RangeTestResult
from lrstudy.rangetest.search import find_lr
from lrstudy.spec.optimizers import OPTIMIZERS
from lrstudy.spec.study import StudySpec
from lrstudy.track import range_runs

RULES_VERSION = 2  # part of the key: bump when a rule changes, so old suggestions are not reused


def range_test_settings(spec: StudySpec, trial: Trial, ramp: Ramp = RAMP) -> dict[str, Any]:
    """Everything a reference range test's result depends on.

    `stable_hash` of it is the test's key (tag lrstudy.range_test_key), which `lr: auto` looks
    for. The seed is the study's first seed for every trial, so all seeds of a configuration train at
    the same automatic LR and their spread measures seeds, not range-test noise.
    """
    return {
        "study": spec.name,
        "optimizer": trial.optimizer,
        "hparams": trial.hparams,
        "layer_lr": trial.layer_lr,
        "model": trial.model,
        "model_args": trial.model_args,
        "dataset": trial.dataset,
        "data_args": trial.data_args,
        "batch_size": trial.batch_size,
        "seed": spec.seeds[0],
        **ramp.settings(),
        "smoothing": rules.SMOOTHING,
        "stop_factor": rules.STOP_FACTOR,
        "rules": RULES_VERSION,
    }


def run_reference_test(
    spec: StudySpec, trial: Trial, data: Any, settings: dict[str, Any]
) -> RangeTestResult:
    """`run_range_test`'s result alone."""
    return run_range_test(spec, trial, data, settings)[0]


def run_range_test(
    spec: StudySpec, trial: Trial, data: Any, settings: dict[str, Any]
) -> tuple[RangeTestResult, list[str]]:
    """Build the trial's model/optimizer/batches and range-test them (deterministic per settings).

    A user's LightningModule is range-tested through its own `training_step` on its DataModule's
    (or its own) training loader; a user's nn.Module with the study's loss. Param groups the user
    named (or layer-wise groups) keep their LR ratios: they move together along the ramp.
    """
    from lrstudy.train.models import build_model, layer_groups, named_groups
    from lrstudy.train.module import TensorBatches
    from lrstudy.train.optim import build_optimizer

    if spec.train.threads:
        torch.set_num_threads(spec.train.threads)
    device = _device(spec.train.accelerator)
    seed = settings["seed"]
    # fork_rng: seed for a reproducible init and dropout without touching the caller's RNG.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        loss_fn: Any = _cross_entropy
        if trial.task_kind == "module":
            model = data.build_module(trial.model_args).to(device)
            batches = _module_batches(data, model, trial)
            loss_fn = None  # the module's own training_step
        else:
            model = build_model(trial.model, data.input_shape, data.num_classes, trial.model_args)
            model = model.to(device)
            batches = TensorBatches(data.x_train, data.y_train, trial.batch_size, seed).to(device)
            if trial.loss != "cross_entropy":
                loss_fn = _loss_of(trial.loss)
        groups = named_groups(model, trial.param_groups) or (
            layer_groups(model) if trial.layer_lr else None
        )
        optimizer, group_names = build_optimizer(
            model, trial.optimizer, settings["lr_min"], trial.hparams, trial.layer_lr, groups
        )
        result = find_lr(
            model,
            batches,
            optimizer,
            lr_min=settings["lr_min"],
            lr_max=settings["lr_max"],
            steps=settings["steps"],
            mode=settings["mode"],
            smoothing=settings["smoothing"],
            stop_factor=settings["stop_factor"],
            loss_fn=loss_fn,
        )
        return result, group_names


def _module_batches(task: Any, module: torch.nn.Module, trial: Trial) -> Any:
    """A user LightningModule's training batches: its DataModule's loader, else its own."""
    if task.manual:
        raise UserInputError(
            f"find-lr: {type(module).__qualname__} uses manual optimization; its training_step "
            "steps optimizers itself and cannot be range-tested outside a Trainer"
        )
    dm = task.build_datamodule(trial.data_args, trial.batch_size)
    if dm is None:
        return module.train_dataloader()
    dm.prepare_data()
    dm.setup("fit")
    return dm.train_dataloader()


def _loss_of(loss: Any):
    from lrstudy.train.losses import make_loss

    fn = make_loss(loss)

    def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return fn(model(x), y)

    return loss_fn


def _cross_entropy(
    model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def _device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("auto", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def log_result(
    client, experiment_id: str, spec: StudySpec, settings: dict, result: RangeTestResult
) -> str:
    """Write the test as a kind=range_test run under the study; returns its run id."""
    params = {
        names.PARAM_OPTIMIZER: settings["optimizer"],
        names.PARAM_SUGGESTION: result.recommended or "none",
        names.PARAM_LR_MIN: result.lr_min,
        names.PARAM_LR_MAX: result.lr_max,
        names.PARAM_STEPS: result.steps,
        names.PARAM_MODE: result.mode,
        "steps_run": len(result.lrs),
        "stop_reason": result.stop_reason or "none",
        "spread": f"{result.spread:.4g}" if result.spread else "none",
        "loss_drop": f"{result.drop:.4g}" if result.drop is not None else "none",
        "group_ratios": [float(f"{r:.6g}") for r in result.group_ratios],
        **{
            k: settings[k]
            for k in ("model", "model_args", "dataset", "data_args", "batch_size", "seed")
        },
        **{k: settings[k] for k in ("layer_lr", "smoothing", "stop_factor", "rules")},
        **{f"opt.{k}": v for k, v in settings["hparams"].items()},
    }
    fig = result.figure()
    fig.suptitle(f"{spec.name}: {settings['optimizer']}")
    return range_runs.log_range_test(
        client,
        experiment_id,
        name=f"range test {settings['optimizer']}",
        study=spec.name,
        key=stable_hash(settings),
        params=params,
        lrs=result.lrs,
        losses=result.losses,
        smoothed=result.smoothed,
        suggestions=result.suggestions,
        figure=fig,
    )


def auto_lr(
    client, experiment_id: str, spec: StudySpec, trial: Trial, data: Any
) -> tuple[float, str]:
    """(LR, "range_test:<rule>") for a trial with `lr: auto`, reusing a logged test when possible.

    Raises:
        UserInputError: the range test gave no suggestion (the loss never fell before it blew up).
    """
    settings = range_test_settings(spec, trial)
    run = range_runs.latest_range_test(client, experiment_id, stable_hash(settings))
    if run is None:
        result = run_reference_test(spec, trial, data, settings)
        log_result(client, experiment_id, spec, settings, result)
        found = (result.recommended_lr, result.recommended) if result.recommended else None
    else:
        found = range_runs.recorded_suggestion(run)
    if found is None:
        raise UserInputError(
            f"{spec.name}: lr: auto for {trial.optimizer}: the range test found no usable LR "
            f"(loss not decreasing before it blew up); give lr explicitly or run find-lr to see why"
        )
    return found[0], f"range_test:{found[1]}"


@dataclass(frozen=True)
class StudyRangeTest:
    """A `find-lr` range test on a study's task, run and logged; the caller prints it."""

    result: RangeTestResult
    run_id: str  # the kind=range_test run it was logged as
    text: str  # the printout: set-up, stop, one row per rule, spread, the recommendation


def find_lr_for_study(
    spec: StudySpec,
    source: str,
    tracking_uri: str,
    *,
    optimizer: str | None = None,
    lr_min: float = RAMP.lr_min,
    lr_max: float = RAMP.lr_max,
    steps: int = RAMP.steps,
    mode: str = RAMP.mode,
) -> StudyRangeTest:
    """Range-test one of the study's optimizers on its task and log the test under the study.

    Args:
        source: the study file, named in error messages.
        optimizer: which of the study's optimizers (default: the first).
        lr_min, lr_max, steps, mode: the ramp (see `rangetest.ramp`).

    Raises:
        UserInputError: an optimizer the study does not have, or a bad ramp; both are checked
            before anything is loaded or written.
    """
    from lrstudy.track.store import experiment_id, open_client
    from lrstudy.train.preflight import preflight

    available = list(dict.fromkeys(o.name for o in spec.optimizers))
    name = optimizer or available[0]
    if name not in available:
        raise UserInputError(
            f"{source}: --optimizer {name!r} is not in this study; its optimizers: {', '.join(available)}"
        )
    ramp = Ramp(lr_min, lr_max, steps, mode).check(UserInputError)
    trials, data = preflight(spec, source)
    # The first planned trial of that optimizer carries the study's resolved hyperparameters
    # (and the first value of any sweep axis), exactly as training would see them.
    trial = next(t for t in trials if t.optimizer == name)
    client = open_client(tracking_uri)
    exp = experiment_id(client, spec.experiment)
    settings = range_test_settings(spec, trial, ramp)
    result, group_names = run_range_test(spec, trial, data, settings)
    run_id = log_result(client, exp, spec, settings, result)
    return StudyRangeTest(result, run_id, format_result(spec, trial, result, group_names))


def format_result(
    spec: StudySpec, trial: Trial, result: RangeTestResult, group_names: list[str] | None = None
) -> str:
    """The find-lr printout: set-up, stop, one row per rule, spread and the recommendation."""
    given = next(o for o in spec.optimizers if o.name == trial.optimizer).hparams
    opt = trial.optimizer + (
        f" ({', '.join(f'{k}={v}' for k, v in given.items())})" if given else ""
    )
    n = len(result.lrs)
    if result.stop_index is not None:
        stop = f"stopped at step {result.stop_index} (LR {result.lrs[result.stop_index]:.3g}): {result.stop_reason}"
    else:
        stop = f"ran all {n} steps" + (f" ({result.stop_reason})" if result.stop_reason else "")
    lines = [
        f"LR range test: study {spec.name}, {opt}, {trial.model} on {trial.dataset}, "
        f"batch {trial.batch_size}, seed {spec.seeds[0]}",
        f"{result.mode} ramp {result.lr_min:g} -> {result.lr_max:g} over {result.steps} steps; {stop} "
        f"[{result.seconds:.1f} s]",
        "",
        f"  {'rule':<10} {'suggested LR':>12}",
    ]
    for rule in rules.RULES:
        lr = result.suggestions.get(rule)
        mark = "  <- recommended" if rule == result.recommended else ""
        lines.append(f"  {rule:<10} {(f'{lr:.3g}' if lr is not None else '-'):>12}{mark}")
    spread = result.spread
    lines.append(f"  spread (max/min): {spread:.1f}x" if spread else "  spread: -")
    if result.drop is not None:
        lines.append(
            f"  the smoothed loss fell {result.drop:.1%} from its start (under "
            f"{rules.FLAT_DROP:.1%} the test saw no learning and edge_div3 is recommended)"
        )
    if result.stop_index is None and result.recommended:
        lines.append(
            f"  note: the smoothed loss never exceeded {rules.STOP_FACTOR:g}x its best, so the rules"
            " read the curve up to --max (a classifier's loss may stall at chance instead)"
        )
    names_ = group_names or []
    if len(names_) > 1 and result.recommended_lr:
        # The groups moved together (their ratios kept); each trains at its own LR.
        per_group = ", ".join(
            f"{g} {result.recommended_lr * r:.3g}" for g, r in zip(names_, result.group_ratios)
        )
        lines.append(f"  per param group at the recommended LR: {per_group}")
    kind = OPTIMIZERS[trial.optimizer].lr_free if trial.optimizer in OPTIMIZERS else None
    if kind == "adaptive":  # what the ramp moved is not a step size
        lines.append(
            f"  note: {trial.optimizer}'s lr multiplies the step size it estimates itself (d*lr): "
            "the ramp moved that multiplier (its package recommends 1.0)"
        )
    lines += ["", result.explanation]
    return "\n".join(lines)
