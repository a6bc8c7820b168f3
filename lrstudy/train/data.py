"""Datasets as in-memory tensors.

Trials are small, so a whole dataset fits in memory and batches are cut by slicing tensors: that is
~30% faster per step than a per-sample DataLoader (see design.md). Every loader here returns the same
frozen `Dataset`; the named ones are in `DATASETS`, files come in as "npz:PATH" or "idx:DIR".
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import random
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrstudy.errors import UserInputError
from lrstudy.keys import stable_hash
from lrstudy.quiet import silence_lightning_pytree
from lrstudy.train.datafiles import IDX_FILES, idx_file, read_idx_dir, read_npz

silence_lightning_pytree()  # every training path imports this module before Trainer.fit


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


def _finish(
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


# --- MNIST-1D: generated offline, cached as .npz ---------------------------------------------------

_MNIST1D_CACHE_VERSION = 1  # bump when the generated arrays would change for the same args


def _default_cache_dir() -> Path:
    return Path(os.environ.get("LRSTUDY_CACHE") or Path.home() / ".cache" / "lrstudy")


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Parallel workers may generate the same file at once: each writes its own temp file and
    # os.replace swaps it in atomically, so a reader never sees a half-written cache.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_mnist1d(
    *,
    num_samples: int = 5000,
    train_split: float = 0.8,
    seed: int = 42,
    shuffle_seq: bool = False,
    iid_noise_scale: float = 2e-2,
    corr_noise_scale: float = 0.25,
    cache_dir: Path | None = None,
) -> Dataset:
    """MNIST-1D from the package's own generator (never its download path), cached on disk.

    Defaults are the paper's: 5000 samples split 4000/1000, x of shape (40,).
    """
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    n = (num_samples // 10) * 10  # the generator makes num_samples // 10 samples per class
    if not 0 < int(n * train_split) < n:
        raise UserInputError(
            f"mnist1d: num_samples={num_samples} with train_split={train_split} leaves an empty split"
        )
    gen = get_dataset_args(as_dict=True)
    gen.pop("url", None)
    gen.update(
        num_samples=num_samples,
        train_split=train_split,
        seed=seed,
        shuffle_seq=shuffle_seq,
        iid_noise_scale=iid_noise_scale,
        corr_noise_scale=corr_noise_scale,
    )
    directory = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    path = directory / f"mnist1d-{stable_hash({'v': _MNIST1D_CACHE_VERSION, **gen})}.npz"
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        # make_dataset reseeds the global `random` and numpy RNGs; restore them so that loading data
        # does not silently change what the caller's own seeded code draws next.
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            raw = make_dataset(ObjectView(gen))
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        arrays = {
            "x_train": raw["x"].astype(np.float32),
            "y_train": raw["y"].astype(np.int64),
            "x_test": raw["x_test"].astype(np.float32),
            "y_test": raw["y_test"].astype(np.int64),
        }
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _write_npz_atomic(path, arrays)
        except OSError:
            pass  # an unwritable cache only costs regeneration next time
    return _finish("mnist1d", *(arrays[k] for k in keys), where=str(path))


# --- sklearn-backed and synthetic datasets ---------------------------------------------------------


def _split(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, scale: bool):
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise UserInputError(f"{name}: test_fraction must be in (0, 1), got {test_fraction}")
    try:
        xtr, xte, ytr, yte = train_test_split(
            x, y, test_size=test_fraction, stratify=y, random_state=seed
        )
    except ValueError as e:
        raise UserInputError(f"{name}: cannot split {len(y)} samples: {e}") from None
    if scale:  # standardise with train statistics only, so nothing leaks from the test split
        mean, std = xtr.mean(axis=0), xtr.std(axis=0) + 1e-8
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
    return _finish(name, xtr, ytr, xte, yte, where=name)


def load_digits(*, test_fraction: float = 0.2, seed: int = 0, image: bool = False) -> Dataset:
    """sklearn's 8x8 digits (ships with sklearn, offline), scaled to [0, 1]; image=True keeps (8, 8)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images if image else d.data).astype(np.float32) / 16.0
    return _split("digits", x, d.target, test_fraction, seed, scale=False)


def _check_n(name: str, n_samples: int, n_classes: int) -> None:
    if n_classes < 2 or n_samples < 4 * n_classes:
        raise UserInputError(
            f"{name}: need n_classes >= 2 and n_samples >= 4 * n_classes, "
            f"got n_samples={n_samples}, n_classes={n_classes}"
        )


def load_spirals(
    *,
    n_samples: int = 1000,
    n_classes: int = 3,
    noise: float = 0.05,
    turns: float = 1.0,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Interleaved spiral arms, one per class: a small problem that a linear model cannot solve."""
    _check_n("spirals", n_samples, n_classes)
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % n_classes
    t = rng.uniform(0.0, 1.0, n_samples)  # position along the arm; radius grows with it
    theta = 2 * np.pi * (y / n_classes + turns * t)
    x = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1)
    x += noise * rng.standard_normal(x.shape)
    return _split("spirals", x, y, test_fraction, seed, scale=True)


def load_moons(
    *, n_samples: int = 1000, noise: float = 0.1, seed: int = 0, test_fraction: float = 0.2
) -> Dataset:
    """sklearn's two half-moons, standardised."""
    from sklearn.datasets import make_moons

    _check_n("moons", n_samples, 2)
    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _split("moons", x, y, test_fraction, seed, scale=True)


def load_blobs(
    *,
    n_samples: int = 1000,
    n_classes: int = 3,
    noise: float = 1.0,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """sklearn's Gaussian blobs (noise = cluster std), standardised."""
    from sklearn.datasets import make_blobs

    _check_n("blobs", n_samples, n_classes)
    x, y = make_blobs(n_samples=n_samples, centers=n_classes, cluster_std=noise, random_state=seed)
    return _split("blobs", x, y, test_fraction, seed, scale=True)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist1d": load_mnist1d,
    "digits": load_digits,
    "spirals": load_spirals,
    "moons": load_moons,
    "blobs": load_blobs,
}


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
        return _finish(ref, *arrays, where=str(path), remap=remap, user_labels=True)
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
