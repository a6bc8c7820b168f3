"""The in-memory dataset every loader returns, and the checks that raw arrays must pass.

Trials are small, so a whole dataset fits in memory and batches are cut by slicing tensors: that is
~30% faster per step than a per-sample DataLoader (see design.md).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lrstudy.errors import UserInputError


@dataclass(frozen=True)
class Dataset:
    """A train/test split as tensors: x float32 (N, *input_shape), y int64 labels 0..num_classes-1."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]


def finish(
    name: str,
    xtr: Any,
    ytr: Any,
    xte: Any,
    yte: Any,
    where: str,
    remap: bool = False,
    user_labels: bool = False,
) -> Dataset:
    """Validate raw arrays and turn them into a Dataset; `where` names the source in errors.

    Labels are class indices, num_classes = the largest label + 1. A user's file (`user_labels`)
    must prove it: y_train holds every class 0..C-1 and y_test only labels among them. Labels
    1..3, or 0, 1, 3, would otherwise train a model with a class that has no sample and report
    nothing; they are an error naming the labels found, unless `remap` (data_args
    `remap_labels: true`), which maps the sorted distinct labels of both splits to 0..C-1 and
    prints a note. A label set with negatives (-1/+1) cannot be indices and is always remapped
    so, with the same note. Generated data sets (mnist1d, ...) are 0-based by construction; a
    small one may lack a class in a split, which keeps its index.
    """
    xtr, ytr, xte, yte = (np.asarray(a) for a in (xtr, ytr, xte, yte))
    for key, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.ndim < 2 or x.shape[0] == 0:
            raise UserInputError(
                f"{where}: x_{key} must be (N, ...) with N > 0, got shape {x.shape}"
            )
        if y.shape != (x.shape[0],):
            raise UserInputError(
                f"{where}: y_{key} must have shape ({x.shape[0]},) to match x_{key}, got {y.shape}"
            )
        if x.dtype.kind not in "biuf":
            raise UserInputError(f"{where}: x_{key} must be numeric, got dtype {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise UserInputError(f"{where}: x_{key} contains NaN or infinite values")
        if y.dtype.kind not in "biu" and not (
            y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all()
        ):
            raise UserInputError(
                f"{where}: y_{key} must hold integer class labels, got dtype {y.dtype}"
            )
    if xtr.shape[1:] != xte.shape[1:]:
        raise UserInputError(
            f"{where}: x_train samples are {xtr.shape[1:]} but x_test samples are {xte.shape[1:]}"
        )
    labels = np.concatenate([ytr, yte]).astype(np.int64)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise UserInputError(f"{where}: need at least 2 distinct labels, found {classes.tolist()}")
    if classes[0] < 0 or remap:
        labels = np.searchsorted(classes, labels)
        num_classes = len(classes)
        if classes[0] != 0 or classes[-1] != num_classes - 1:
            _note_once(
                f"note: {where}: labels {_listing(classes)} remapped to 0..{num_classes - 1} "
                "in sorted order"
            )
    elif user_labels:
        num_classes = _check_class_indices(where, ytr.astype(np.int64), yte.astype(np.int64))
    else:
        num_classes = int(classes[-1]) + 1

    def as_x(x: np.ndarray) -> torch.Tensor:
        # uint8 is raw pixel intensity (MNIST and friends): scale to [0, 1] like torchvision does.
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(x))

    return Dataset(
        name=name,
        x_train=as_x(xtr),
        y_train=torch.from_numpy(labels[: len(ytr)].copy()),
        x_test=as_x(xte),
        y_test=torch.from_numpy(labels[len(ytr) :].copy()),
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in xtr.shape[1:]),
    )


def _listing(values: Any, limit: int = 8) -> str:
    """ "1, 2, 3"; past `limit` values the first `limit` and "(+N more)"."""
    items = [str(v) for v in np.asarray(values).tolist()]
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _check_class_indices(where: str, ytr: np.ndarray, yte: np.ndarray) -> int:
    """num_classes of non-negative labels, once y_train holds every class 0..C-1 and y_test no
    other; else a UserInputError naming the labels found and the way out."""
    found = np.unique(ytr)
    num_classes = int(found[-1]) + 1
    if len(found) != num_classes:
        absent = sorted(set(range(num_classes)) - set(found.tolist()))
        raise UserInputError(
            f"{where}: y_train: labels must be 0..C-1 with every class present; found "
            f"{_listing(found)} ({len(found)} classes; {_listing(absent)} absent); remap them or "
            "set data_args: {remap_labels: true}"
        )
    extra = np.unique(yte[yte >= num_classes])
    if len(extra):
        raise UserInputError(
            f"{where}: y_test: label {_listing(extra)} is not a class of y_train (0..{num_classes - 1}); "
            "every class needs training samples"
        )
    return num_classes


_NOTED: set[str] = set()


def _note_once(text: str) -> None:
    """Print a note to stderr once per process (the data are loaded again by each worker)."""
    if text not in _NOTED:
        _NOTED.add(text)
        print(text, file=sys.stderr, flush=True)
