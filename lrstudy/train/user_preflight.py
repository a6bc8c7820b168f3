"""Checks of a user's LightningModule / DataModule task and of a user model's forward pass.

Each mistake is one line (file, field, value, what is allowed) before anything is written; code
that raises inside a user's class during these checks is reported the same way, since every
trial would fail on it.
"""

from __future__ import annotations

from typing import Any

import torch

from lrstudy.errors import UserInputError
from lrstudy.plan import Trial
from lrstudy.spec import StudySpec
from lrstudy.train.data import Dataset
from lrstudy.train.losses import make_loss
from lrstudy.train.models import check_groups
from lrstudy.train.user_classes import accepted_args, check_kind, import_class, resolve
from lrstudy.train.user_module import ModuleTask


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def check_forward(model: torch.nn.Module, data: Dataset, trial: Trial, where: str) -> None:
    """Two training samples through the model and the loss: shapes that do not fit are one line."""
    x, y = data.x_train[:2], data.y_train[:2]
    try:
        with torch.no_grad():
            out = model(x)
            loss = make_loss(trial.loss)(out, y)
    except Exception as e:  # noqa: BLE001 - the user's forward or loss raised
        raise UserInputError(
            f"{where}: a forward pass on 2 samples (input {tuple(x.shape)}, target "
            f"{tuple(y.shape)} {str(y.dtype).removeprefix('torch.')}) with loss {_loss_label(trial)} "
            f"failed: {_one_line(e)}"
        ) from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise UserInputError(
            f"{where}: loss {_loss_label(trial)} must return one number, got {loss!r:.80}"
        )


def _loss_label(trial: Trial) -> str:
    return trial.loss if isinstance(trial.loss, str) else trial.loss["class_path"]


def check_module_task(
    spec: StudySpec,
    source: str,
    trials: list[Trial],
    dirs: tuple[str, ...],
    factories: dict[str, Any] | None,
) -> ModuleTask:
    """Resolve and check task.module / task.datamodule; return what trials build them from."""
    task = spec.task
    where = f"{source}: task"
    size_field = (
        "sweep.batch_size"
        if spec.sweep.batch_size is not None
        else "train.batch_size"
        if spec.train.batch_size is not None
        else None
    )
    dm_cls, takes_bs = None, False
    if task.datamodule is not None:
        dm_where = f"{where}.datamodule"
        dm_cls = (factories or {}).get("datamodule") or import_class(
            task.datamodule.class_path, f"{dm_where}.class_path", dirs
        )
        check_kind(dm_cls, "datamodule", dm_where)
        names, _, var_kw = accepted_args(dm_cls)
        takes_bs = "batch_size" in names or var_kw
        if size_field and not takes_bs:
            raise UserInputError(
                f"{source}: {size_field}: not allowed: {_label(dm_cls)} has no batch_size init "
                f"arg to set (it takes {', '.join(names) or 'no arguments'}); remove "
                f"{size_field} or add batch_size to the DataModule"
            )
        provided = ("batch_size",) if size_field else ()
        resolve("datamodule", task.datamodule, dm_where, dirs, factories, provided)
    elif size_field:
        raise UserInputError(
            f"{source}: {size_field}: not allowed without task.datamodule (a module's own "
            f"loaders set their batch size); give a DataModule that takes batch_size"
        )
    module_cls = resolve("module", task.module, f"{where}.module", dirs, factories)
    module = _build_once(module_cls, trials[0], f"{where}.module")
    from lightning.pytorch.utilities.model_helpers import is_overridden

    if dm_cls is None and not is_overridden("train_dataloader", module):
        raise UserInputError(
            f"{where}.module: {_label(module_cls)} defines no train_dataloader; give "
            f"task.datamodule: {{class_path: ...}}"
        )
    layer_lrs = [opt.layer_lr for opt in spec.optimizers]
    check_groups(module, trials[0].param_groups, layer_lrs, source, _label(module_cls))
    overrides = is_overridden("configure_optimizers", module)
    manual = not module.automatic_optimization
    if manual and overrides:
        n = _own_optimizer_count(module)
        if n is not None and n > 1:
            raise UserInputError(
                f"{where}.module: {_label(module_cls)} uses manual optimization with {n} "
                f"optimizers; a study gives a module one optimizer (its LR is what is studied)"
            )
    return ModuleTask(module_cls, dm_cls, takes_bs, overrides, manual)


def _label(obj: Any) -> str:
    return getattr(obj, "__qualname__", repr(obj))


def _build_once(cls: Any, trial: Trial, where: str) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(trial.seed)
        try:
            return cls(**trial.model_args)
        except Exception as e:  # noqa: BLE001 - the constructor raised: every trial would
            raise UserInputError(
                f"{where}: {_label(cls)}(**init_args) failed: {_one_line(e)}"
            ) from None


def _own_optimizer_count(module: Any) -> int | None:
    """How many optimizers the module's own configure_optimizers returns (None: cannot tell
    without a Trainer)."""
    try:
        out = type(module).configure_optimizers(module)
    except Exception:  # noqa: BLE001 - it may need self.trainer; then we cannot tell
        return None
    if isinstance(out, torch.optim.Optimizer):
        return 1
    if isinstance(out, dict):
        return 1
    if isinstance(out, list | tuple):
        if len(out) == 2 and isinstance(out[0], list | tuple):
            return len(out[0])
        return sum(isinstance(o, torch.optim.Optimizer | dict) for o in out)
    return None
