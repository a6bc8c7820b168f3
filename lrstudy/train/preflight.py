"""Everything a user can get wrong about a study's task, checked before any MLflow write.

Reference tasks load their data set and build their model once. Tasks with user classes import
them (from the study file's folder, the working directory, then installed packages), check each
class's kind and init_args against its signature, build the model once and run one batch
through it, so a mistake is one line before anything is written.
"""

from __future__ import annotations

from typing import Any

from lrstudy.errors import UserInputError
from lrstudy.plan import Trial, plan_trials, tpe_problem
from lrstudy.spec import StudySpec
from lrstudy.spec.optimizers import missing_extra
from lrstudy.train.data import Dataset, load_dataset
from lrstudy.train.models import build_model, check_groups
from lrstudy.train.user_classes import resolve, search_dirs


def preflight(
    spec: StudySpec,
    source: str,
    *,
    dirs: tuple[str, ...] | None = None,
    factories: dict[str, Any] | None = None,
) -> tuple[list[Trial], Any]:
    """Plan the trials and load what they train on: a `Dataset`, or for task.module a
    `ModuleTask` (the user's classes).

    Args:
        dirs: where class paths are looked up first (default: the study file's folder, then the
            working directory).
        factories: classes or factories given to the Python API, by task field.
    Raises:
        UserInputError: bad data set reference or file, bad model name or args, a user class that
            cannot be imported, is of the wrong kind or gets init_args it does not take, or
            layer-wise LR multipliers that do not match the model's groups.
    """
    check_extras(spec, source)
    if problem := tpe_problem(spec):
        raise UserInputError(f"{source}: {problem}")
    trials = plan_trials(spec)
    dirs = search_dirs(source) if dirs is None else dirs
    if spec.task.kind == "module":
        from lrstudy.train.user_preflight import check_module_task

        return trials, check_module_task(spec, source, trials, dirs, factories)
    task = spec.task
    where = f"{source}: task"
    if hasattr(task.loss, "class_path"):
        resolve("loss", task.loss, f"{where}.loss", dirs, factories)
    data = _load_data(spec, source, dirs, factories)
    if task.kind == "model":
        resolve("model", task.model, f"{where}.model", dirs, factories)
    name, args = (trials[0].model, trials[0].model_args)
    try:
        model = build_model(name, data.input_shape, data.num_classes, args)
    except UserInputError as e:
        raise UserInputError(f"{source}: task.model: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's constructor raised: one line
        raise UserInputError(
            f"{source}: task.model: {name}(**init_args) failed: {type(e).__name__}: {e}"
        ) from None
    if task.kind == "model":
        from lrstudy.train.user_preflight import check_forward

        check_forward(model, data, trials[0], f"{source}: task.model")
    layer_lrs = [opt.layer_lr for opt in spec.optimizers]
    check_groups(model, trials[0].param_groups, layer_lrs, source, f"model {name}")
    return trials, data


def check_extras(spec: StudySpec, source: str) -> None:
    """An LR-free optimizer (or baseline) whose package is missing: one line saying how to
    install it, before anything is loaded or written."""
    named = [(f"optimizers[{i}].name", o.name) for i, o in enumerate(spec.optimizers)]
    named += [(f"baselines[{i}]", b) for i, b in enumerate(spec.baselines)]
    for field, name in named:
        missing = missing_extra(name)
        if missing:
            raise UserInputError(f"{source}: {field}: {missing}")


def _load_data(
    spec: StudySpec, source: str, dirs: tuple[str, ...], factories: dict[str, Any] | None
) -> Dataset:
    task = spec.task
    if hasattr(task.dataset, "class_path"):
        from lrstudy.train.user_data import load_user_dataset

        where = f"{source}: task.dataset"
        cls = resolve("dataset", task.dataset, where, dirs, factories)
        return load_user_dataset(
            cls, dict(task.dataset.init_args), where, task.data_args.get("val_fraction")
        )
    try:
        return load_dataset(task.dataset, task.data_args)
    except UserInputError as e:
        raise UserInputError(f"{source}: task.dataset: {e}") from None
