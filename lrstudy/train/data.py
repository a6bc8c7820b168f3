"""Datasets as in-memory tensors: the public entry points.

Every loader returns the same frozen `Dataset` (lrstudy.train.dataset); the named ones are in
`DATASETS` (lrstudy.train.builtin_data), files come in as "npz:PATH" or "idx:DIR".
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrstudy.errors import UserInputError
from lrstudy.quiet import silence_lightning_pytree
from lrstudy.train.builtin_data import DATASETS
from lrstudy.train.datafiles import IDX_FILES, idx_file, read_idx_dir, read_npz
from lrstudy.train.dataset import Dataset, finish

__all__ = ["DATASETS", "Dataset", "check_dataset_ref", "dataset_arg_names", "dataset_names",
           "load_dataset", "subset_train"]  # fmt: skip

silence_lightning_pytree()  # every training path imports this module before Trainer.fit


# --- public entry points ---------------------------------------------------------------------------


def dataset_names() -> list[str]:
    """Every accepted dataset reference form, for error messages and help text."""
    return [*DATASETS, "npz:PATH", "idx:DIR"]


# data_args of npz:/idx: files: remap_labels maps labels that are not 0..C-1 (1..3, 0/2/5) to it.
FILE_ARGS = {"remap_labels": False}


def dataset_arg_names(ref: str) -> list[str]:
    """The allowed `args` keys for a dataset reference (files: `FILE_ARGS`)."""
    factory = DATASETS.get(ref)
    if factory is None:
        return list(FILE_ARGS) if ref.startswith(("npz:", "idx:")) else []
    params = inspect.signature(factory).parameters
    return [p for p in params if p != "cache_dir"]


def check_dataset_ref(ref: str) -> None:
    """Cheap check of a dataset reference before anything runs: the name is known, the file exists.

    Raises:
        UserInputError: one line naming the value and what is allowed.
    """
    kind, _, rest = ref.partition(":")
    if ref in DATASETS:
        return
    if kind == "npz" and rest:
        if not Path(rest).expanduser().is_file():
            raise UserInputError(f"dataset {ref!r}: no such file {rest}")
        return
    if kind == "idx" and rest:
        directory = Path(rest).expanduser()
        if not directory.is_dir():
            raise UserInputError(f"dataset {ref!r}: no such directory {rest}")
        missing = [b for b, _ in IDX_FILES.values() if idx_file(directory, b) is None]
        if missing:
            raise UserInputError(
                f"dataset {ref!r}: {rest} lacks {', '.join(missing)} (each may end in .gz)"
            )
        return
    raise UserInputError(f"unknown dataset {ref!r}; expected one of: {', '.join(dataset_names())}")


def _coerce(ref: str, key: str, value: Any, default: Any) -> Any:
    """Check an arg against its default's type; numeric strings pass as floats (YAML reads 1e-3 so)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = True
    if not ok:
        raise UserInputError(
            f"dataset {ref!r}: arg {key!r} must be {type(default).__name__}, got {value!r}"
        )
    return value


def load_dataset(ref: str, args: dict | None = None, cache_dir: Path | None = None) -> Dataset:
    """Load a dataset by reference: a name in DATASETS, "npz:PATH" or "idx:DIR".

    Args:
        ref: the dataset reference.
        args: per-dataset options (see `dataset_arg_names`); files take `remap_labels`.
        cache_dir: where generated data (mnist1d) is cached; default $LRSTUDY_CACHE or ~/.cache/lrstudy.

    Raises:
        UserInputError: unknown reference or arg, bad arg value, malformed file.
    """
    check_dataset_ref(ref)
    args = dict(args or {})
    factory = DATASETS.get(ref)
    allowed = dataset_arg_names(ref)
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        what = f"allowed: {', '.join(allowed)}" if allowed else "it takes none"
        if factory is None:  # a file: its data are as given, bar a remap of the labels
            what = f"it takes none except {', '.join(FILE_ARGS)}"
        raise UserInputError(f"dataset {ref!r}: unknown args {', '.join(unknown)}; {what}")
    if factory is None:
        kind, _, rest = ref.partition(":")
        path = Path(rest).expanduser()
        arrays = read_npz(path) if kind == "npz" else read_idx_dir(path)
        remap = _coerce(ref, "remap_labels", args.get("remap_labels", False), False)
        return finish(ref, *arrays, where=str(path), remap=remap, user_labels=True)
    params = inspect.signature(factory).parameters
    kwargs = {k: _coerce(ref, k, v, params[k].default) for k, v in args.items()}
    if "cache_dir" in params:
        kwargs["cache_dir"] = cache_dir
    return factory(**kwargs)


def subset_train(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """Keep a stratified `fraction` of the train split (test untouched), for learning curves vs size.

    Each class keeps max(1, round(fraction * n_class)) samples, taken from a per-class permutation
    that depends only on `seed`, so for a fixed seed a smaller fraction's subset is contained in a
    larger one's: points on a data-size curve differ only by the added samples.

    Raises:
        UserInputError: fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise UserInputError(f"train fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return ds
    rng = np.random.default_rng(seed)
    y = ds.y_train.numpy()
    keep = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = max(1, round(fraction * len(members)))
        keep.append(rng.permutation(members)[:k])
    index = torch.from_numpy(np.sort(np.concatenate(keep)))
    return dataclasses.replace(ds, x_train=ds.x_train[index], y_train=ds.y_train[index])
