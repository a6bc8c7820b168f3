"""A user's `torch.utils.data.Dataset` class as lrstudy's in-memory train/validation tensors.

lrstudy feeds batches by slicing tensors already on the training device (design.md: per-sample
collate costs more than a small model's step), so a user's data set is read once, item by item,
into tensors. Its validation split: the class's own, when its constructor takes `train`
(torchvision's convention), else a fixed, seeded `val_fraction` of its items.
"""

from __future__ import annotations

from typing import Any

import torch

from lrstudy.errors import UserInputError
from lrstudy.train.data import Dataset
from lrstudy.train.losses import is_classification
from lrstudy.train.user_classes import accepted_args

VAL_FRACTION = 0.2
SPLIT_SEED = 0  # the split never depends on a trial's seed: every trial validates on the same items


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


def _stack(ds: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        n = len(ds)
    except TypeError:
        raise UserInputError(
            f"{where}: {type(ds).__name__} has no len(): a map-style Dataset is needed"
        ) from None
    if n == 0:
        raise UserInputError(f"{where}: {type(ds).__name__} is empty")
    xs, ys = [], []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise UserInputError(
                f"{where}: item {i} of {type(ds).__name__} is {type(item).__name__}; "
                f"expected (input, target)"
            )
        xs.append(_tensor(item[0]))
        ys.append(_tensor(item[1]))
    x = torch.stack(xs)
    y = torch.stack(ys)
    x = x.float() if not x.is_floating_point() else x.to(torch.float32)
    y = y.long() if is_classification(y) else y.to(torch.float32)
    return x, y


def load_user_dataset(
    cls: Any, init_args: dict[str, Any], where: str, val_fraction: float | None = None
) -> Dataset:
    """Read a user's Dataset class into a `Dataset` of tensors (train and validation splits).

    Raises:
        UserInputError: the class raised while building or reading, items that are not
            (input, target) pairs, or a val_fraction outside (0, 1).
    """
    names, _, _ = accepted_args(cls)
    own_split = "train" in names and "train" not in init_args and val_fraction is None
    label = getattr(cls, "__qualname__", repr(cls))
    try:
        if own_split:
            x_train, y_train = _stack(cls(**init_args, train=True), where)
            x_test, y_test = _stack(cls(**init_args, train=False), where)
        else:
            x, y = _stack(cls(**init_args), where)
            frac = VAL_FRACTION if val_fraction is None else float(val_fraction)
            if not 0 < frac < 1:
                raise UserInputError(
                    f"{where}: data_args.val_fraction: {frac} is not allowed: in (0, 1)"
                )
            gen = torch.Generator().manual_seed(SPLIT_SEED)
            perm = torch.randperm(len(x), generator=gen)
            n_val = max(1, round(frac * len(x)))
            if n_val >= len(x):
                raise UserInputError(
                    f"{where}: {len(x)} items leave nothing to train on after the validation split"
                )
            val, train = perm[:n_val], perm[n_val:]
            x_train, y_train, x_test, y_test = x[train], y[train], x[val], y[val]
    except UserInputError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's class failed: one line, before any write
        raise UserInputError(
            f"{where}: {label}(**init_args) failed: {type(e).__name__}: {e}"
        ) from None
    classes = int(max(y_train.max(), y_test.max()).item()) + 1 if is_classification(y_train) else 0
    return Dataset(
        name=f"{getattr(cls, '__module__', '')}.{label}",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=classes,
        input_shape=tuple(x_train.shape[1:]),
    )
