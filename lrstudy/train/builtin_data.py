"""The named datasets: MNIST-1D (generated offline), sklearn's digits, synthetic sets.

MNIST-1D and digits splits are cached as .npz under $LRSTUDY_CACHE (default ~/.cache/lrstudy):
generating MNIST-1D, or importing sklearn and parsing its digits file, costs a small study more
than its training (bench/bench_fixed_cost.py).
"""

from __future__ import annotations

import os
import random
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lrstudy.errors import UserInputError
from lrstudy.keys import stable_hash
from lrstudy.train.dataset import Dataset, finish

# --- MNIST-1D: generated offline, cached as .npz ---------------------------------------------------

_MNIST1D_CACHE_VERSION = 1  # bump when the generated arrays would change for the same args


def _default_cache_dir() -> Path:
    return Path(os.environ.get("LRSTUDY_CACHE") or Path.home() / ".cache" / "lrstudy")


_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _cached(path: Path, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The split arrays stored at `path`, else `make()`'s, stored there for next time."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in _SPLIT_KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        arrays = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_npz_atomic(path, arrays)
    except OSError:
        pass  # an unwritable cache only costs regeneration next time
    return arrays


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

    def make() -> dict[str, np.ndarray]:
        # make_dataset reseeds the global `random` and numpy RNGs; restore them so that loading
        # data does not silently change what the caller's own seeded code draws next.
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            raw = make_dataset(ObjectView(gen))
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        return {
            "x_train": raw["x"].astype(np.float32),
            "y_train": raw["y"].astype(np.int64),
            "x_test": raw["x_test"].astype(np.float32),
            "y_test": raw["y_test"].astype(np.int64),
        }

    arrays = _cached(path, make)
    return finish("mnist1d", *(arrays[k] for k in _SPLIT_KEYS), where=str(path))


# --- sklearn-backed and synthetic datasets ---------------------------------------------------------


def _split_arrays(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int,
                  scale: bool) -> dict[str, np.ndarray]:  # fmt: skip
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
    return dict(zip(_SPLIT_KEYS, (xtr, ytr, xte, yte), strict=True))


def _split(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, scale: bool):
    arrays = _split_arrays(name, x, y, test_fraction, seed, scale)
    return finish(name, *(arrays[k] for k in _SPLIT_KEYS), where=name)


_DIGITS_CACHE_VERSION = 1


def load_digits(
    *, test_fraction: float = 0.2, seed: int = 0, image: bool = False, cache_dir: Path | None = None
) -> Dataset:
    """sklearn's 8x8 digits (ships with sklearn, offline), scaled to [0, 1]; image=True keeps (8, 8).

    The split is cached like MNIST-1D's: importing sklearn and parsing its file cost a ~1 s
    study more than the training (bench/bench_fixed_cost.py)."""
    if not 0 < test_fraction < 1:
        raise UserInputError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")

    def make() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits as sk_digits

        d = sk_digits()
        x = (d.images if image else d.data).astype(np.float32) / 16.0
        return _split_arrays("digits", x, d.target, test_fraction, seed, scale=False)

    args = {
        "v": _DIGITS_CACHE_VERSION,
        "test_fraction": test_fraction,
        "seed": seed,
        "image": image,
    }
    directory = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    arrays = _cached(directory / f"digits-{stable_hash(args)}.npz", make)
    return finish("digits", *(arrays[k] for k in _SPLIT_KEYS), where="digits")


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
