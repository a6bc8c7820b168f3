"""Everything a user can get wrong about a study's task, checked before any MLflow write."""

from __future__ import annotations

from lrstudy.errors import UserInputError
from lrstudy.plan import Trial, plan_trials
from lrstudy.spec import StudySpec
from lrstudy.train.data import Dataset, load_dataset
from lrstudy.train.models import build_model, layer_groups


def preflight(spec: StudySpec, source: str) -> tuple[list[Trial], Dataset]:
    """Plan the trials, load the data set and build the model once.

    Raises:
        UserInputError: bad data set reference or file, bad model name or model_args, or
            layer-wise LR multipliers that do not match the model's layers.
    """
    trials = plan_trials(spec)
    try:
        data = load_dataset(spec.task.dataset, spec.task.data_args)
    except UserInputError as e:
        raise UserInputError(f"{source}: task.dataset: {e}") from None
    try:
        model = build_model(
            spec.task.model, data.input_shape, data.num_classes, spec.task.model_args
        )
    except UserInputError as e:
        raise UserInputError(f"{source}: task.model: {e}") from None
    n_layers = len(layer_groups(model))
    for i, opt in enumerate(spec.optimizers):
        if isinstance(opt.layer_lr, tuple) and len(opt.layer_lr) != n_layers:
            raise UserInputError(
                f"{source}: optimizers[{i}].layer_lr: {list(opt.layer_lr)} has "
                f"{len(opt.layer_lr)} multipliers; model {spec.task.model} has {n_layers} layers"
            )
    return trials, data
