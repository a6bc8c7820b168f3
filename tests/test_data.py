"""Datasets: every loader, the mnist1d cache, npz/IDX files and their errors, train subsets."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lrstudy.errors import UserInputError
from lrstudy.train.data import (
    DATASETS,
    Dataset,
    check_dataset_ref,
    dataset_arg_names,
    dataset_names,
    load_dataset,
    subset_train,
)

SMALL = {"n_samples": 200}


def assert_well_formed(ds: Dataset) -> None:
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == ds.input_shape and len(x) == len(y) > 0
        assert int(y.min()) >= 0 and int(y.max()) < ds.num_classes
        assert torch.isfinite(x).all()


@pytest.mark.parametrize(
    ("name", "args", "shape", "classes"),
    [
        ("digits", {}, (64,), 10),
        ("digits", {"image": True}, (8, 8), 10),
        ("spirals", {**SMALL, "n_classes": 4}, (2,), 4),
        ("moons", SMALL, (2,), 2),
        ("blobs", {**SMALL, "n_classes": 5}, (2,), 5),
    ],
)
def test_named_datasets_load(name, args, shape, classes):
    ds = load_dataset(name, args)
    assert_well_formed(ds)
    assert (ds.name, ds.input_shape, ds.num_classes) == (name, shape, classes)
    assert len(ds.x_test) / (len(ds.x_train) + len(ds.x_test)) == pytest.approx(0.2, abs=0.01)
    again = load_dataset(name, args)  # fixed seeds: the same split every time
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)


def test_digits_scaled_to_unit_range_and_synthetic_standardised():
    digits = load_dataset("digits")
    assert float(digits.x_train.min()) == 0.0 and float(digits.x_train.max()) == 1.0
    moons = load_dataset("moons", SMALL)
    assert moons.x_train.mean(0).abs().max() < 1e-5
    assert torch.allclose(moons.x_train.std(0), torch.ones(2), atol=0.01)


def test_mnist1d_generated_and_cached(tmp_path):
    ds = load_dataset("mnist1d", {"num_samples": 500}, cache_dir=tmp_path)
    assert_well_formed(ds)
    assert ds.x_train.shape == (400, 40) and ds.x_test.shape == (100, 40)
    assert ds.num_classes == 10 and ds.input_shape == (40,)
    (cache,) = tmp_path.glob("mnist1d-*.npz")
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temp file behind
    mtime = cache.stat().st_mtime_ns

    again = load_dataset("mnist1d", {"num_samples": 500}, cache_dir=tmp_path)
    assert cache.stat().st_mtime_ns == mtime
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)

    # Proof that the second load reads the file rather than regenerating: a doctored cache wins.
    with np.load(cache) as f:
        arrays = dict(f)
    arrays["x_train"] = np.full_like(arrays["x_train"], 7.0)
    np.savez(cache, **arrays)
    assert (
        float(load_dataset("mnist1d", {"num_samples": 500}, cache_dir=tmp_path).x_train[0, 0]) == 7
    )


def test_mnist1d_cache_keyed_by_args_and_leaves_global_rng_alone(tmp_path):
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    a = load_dataset("mnist1d", {"num_samples": 200, "seed": 1}, cache_dir=tmp_path)
    assert (np.random.rand(), random.random()) == expected
    b = load_dataset("mnist1d", {"num_samples": 200, "seed": 2}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 2
    assert not torch.equal(a.x_train, b.x_train)


def test_mnist1d_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LRSTUDY_CACHE", str(tmp_path / "env-cache"))
    load_dataset("mnist1d", {"num_samples": 100})
    assert len(list((tmp_path / "env-cache").glob("mnist1d-*.npz"))) == 1


def test_mnist1d_empty_split_rejected(tmp_path):
    with pytest.raises(UserInputError, match="empty split"):
        load_dataset("mnist1d", {"num_samples": 5}, cache_dir=tmp_path)


def test_args_checked():
    with pytest.raises(UserInputError, match=r"unknown args bogus; allowed: n_samples, noise"):
        load_dataset("moons", {"bogus": 1})
    with pytest.raises(UserInputError, match="'n_samples' must be int"):
        load_dataset("moons", {"n_samples": "lots"})
    with pytest.raises(UserInputError, match="'image' must be bool"):
        load_dataset("digits", {"image": 1})
    # YAML 1.1 reads 1e-2 as a string: numeric strings are accepted for float args.
    assert load_dataset("moons", {**SMALL, "noise": "1e-2"}).num_classes == 2
    assert dataset_arg_names("mnist1d") == [
        "num_samples",
        "train_split",
        "seed",
        "shuffle_seq",
        "iid_noise_scale",
        "corr_noise_scale",
    ]
    assert set(DATASETS) == {"mnist1d", "digits", "spirals", "moons", "blobs"}


def write_npz(path: Path, **overrides) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(12, 5)),
        "y_train": np.arange(12) % 3,
        "x_test": rng.normal(size=(6, 5)),
        "y_test": np.arange(6) % 3,
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_round_trip(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    ds = load_dataset(f"npz:{path}")
    assert_well_formed(ds)
    assert (ds.name, ds.input_shape, ds.num_classes) == (f"npz:{path}", (5,), 3)
    with np.load(path) as f:
        assert (
            np.allclose(ds.x_test.numpy(), f["x_test"])
            and (ds.y_train.numpy() == f["y_train"]).all()
        )


def test_npz_uint8_images_and_label_forms(tmp_path):
    images = np.arange(12 * 6 * 6).reshape(12, 6, 6).astype(np.uint8)
    path = write_npz(
        tmp_path / "img.npz",
        x_train=images,
        x_test=images[:4],
        y_train=np.where(np.arange(12) % 2, 1.0, -1.0),  # -1/+1 float labels: integral, remapped
        y_test=np.array([-1.0, 1.0, 1.0, -1.0]),
    )
    ds = load_dataset(f"npz:{path}")
    assert ds.input_shape == (6, 6) and ds.num_classes == 2
    assert float(ds.x_train.max()) <= 1.0 and float(ds.x_train[0, 0, 1]) == pytest.approx(1 / 255)
    assert ds.y_test.tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"y_test": None}, "missing arrays y_test"),
        ({"y_train": np.zeros(11, dtype=int)}, "y_train must have shape"),
        ({"x_test": np.zeros((6, 4))}, "x_test samples are"),
        ({"y_train": np.arange(12) / 2}, "integer class labels"),
        ({"y_train": np.array(["a"] * 12)}, "integer class labels"),
        ({"x_train": np.full((12, 5), np.nan)}, "NaN"),
        ({"x_train": np.zeros(12)}, r"must be \(N, ...\)"),
        ({"y_train": np.zeros(12, int), "y_test": np.zeros(6, int)}, "at least 2 distinct labels"),
    ],
)
def test_npz_malformed(tmp_path, overrides, message):
    path = write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(UserInputError, match=message) as err:
        load_dataset(f"npz:{path}")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("content", [b"not a zip file", "pickled"], ids=["garbage", "object-array"])
def test_npz_unreadable(tmp_path, content):
    path = tmp_path / "bad.npz"
    if content == "pickled":
        write_npz(path, x_train=np.array([{"a": 1}] * 12, dtype=object))
    else:
        path.write_bytes(content)
    with pytest.raises(UserInputError, match="not a readable .npz") as err:
        load_dataset(f"npz:{path}")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool = False) -> None:
    """Write an unsigned-byte IDX file: magic, big-endian uint32 dims, then the data."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + np.array(array.shape, dtype=">u4").tobytes()
    blob = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def write_mnist_dir(directory: Path, gz: bool = False, n_train: int = 10, n_test: int = 5) -> Path:
    rng = np.random.default_rng(0)
    directory.mkdir(exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 4, 3)), gz=gz)
    write_idx(directory / "train-labels-idx1-ubyte", np.arange(n_train) % 10, gz=gz)
    write_idx(directory / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 4, 3)), gz=gz)
    write_idx(directory / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, gz=gz)
    return directory


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    directory = write_mnist_dir(tmp_path / "mnist", gz=gz)
    check_dataset_ref(f"idx:{directory}")
    ds = load_dataset(f"idx:{directory}")
    assert_well_formed(ds)
    assert ds.x_train.shape == (10, 4, 3) and ds.x_test.shape == (5, 4, 3)
    assert ds.input_shape == (4, 3) and ds.num_classes == 10
    assert ds.y_train.tolist() == list(range(10))
    expected = np.random.default_rng(0).integers(0, 256, (10, 4, 3)) / 255
    assert np.allclose(ds.x_train.numpy(), expected)


@pytest.mark.parametrize(
    ("file", "blob", "message"),
    [
        ("train-images-idx3-ubyte", (0x0801).to_bytes(4, "big") + b"\0\0\0\0", "bad IDX magic"),
        ("train-labels-idx1-ubyte", b"\0\0", "bad IDX magic"),
        ("t10k-images-idx3-ubyte", (0x0803).to_bytes(4, "big") + b"\0\0\0\1", "header truncated"),
        ("t10k-labels-idx1-ubyte", (0x0801).to_bytes(4, "big") + b"\0\0\0\5abc", "need 5 data"),
        ("t10k-labels-idx1-ubyte.gz", b"not gzip at all", "cannot read"),
    ],
)
def test_idx_malformed(tmp_path, file, blob, message):
    directory = write_mnist_dir(tmp_path / "mnist")
    (directory / file.removesuffix(".gz")).unlink()
    (directory / file).write_bytes(blob)
    with pytest.raises(UserInputError, match=message) as err:
        load_dataset(f"idx:{directory}")
    assert str(directory / file) in str(err.value) and "\n" not in str(err.value)


def test_idx_count_mismatch(tmp_path):
    directory = write_mnist_dir(tmp_path / "mnist")
    write_idx(directory / "train-labels-idx1-ubyte", np.arange(9) % 10)
    with pytest.raises(UserInputError, match="has 10 images but .* has 9 labels") as err:
        load_dataset(f"idx:{directory}")
    assert str(directory / "train-labels-idx1-ubyte") in str(err.value)


def test_check_dataset_ref(tmp_path):
    for name in DATASETS:
        check_dataset_ref(name)
    check_dataset_ref(f"npz:{write_npz(tmp_path / 'ok.npz')}")
    for bad in ("mnist", "", "npz:", "idx:", "csv:foo.csv"):
        with pytest.raises(UserInputError) as err:
            check_dataset_ref(bad)
        assert str(err.value) == (
            f"unknown dataset {bad!r}; expected one of: "
            "mnist1d, digits, spirals, moons, blobs, npz:PATH, idx:DIR"
        )
    assert dataset_names()[-2:] == ["npz:PATH", "idx:DIR"]
    with pytest.raises(UserInputError, match="no such file .*nope.npz"):
        check_dataset_ref(f"npz:{tmp_path / 'nope.npz'}")
    with pytest.raises(UserInputError, match="no such directory .*nodir"):
        check_dataset_ref(f"idx:{tmp_path / 'nodir'}")
    directory = write_mnist_dir(tmp_path / "partial")
    (directory / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserInputError, match="partial lacks t10k-labels-idx1-ubyte"):
        load_dataset(f"idx:{directory}")
    with pytest.raises(UserInputError, match="unknown args seed; it takes none"):
        load_dataset(f"npz:{tmp_path / 'ok.npz'}", {"seed": 1})


def test_subset_train_stratified_deterministic_nested():
    ds = load_dataset("blobs", {"n_samples": 300, "n_classes": 3})  # 80 train samples per class
    half = subset_train(ds, 0.5, seed=0)
    assert torch.bincount(half.y_train).tolist() == [40, 40, 40]
    assert torch.equal(half.x_test, ds.x_test) and half.num_classes == ds.num_classes
    assert torch.equal(half.x_train, subset_train(ds, 0.5, seed=0).x_train)
    assert not torch.equal(half.x_train, subset_train(ds, 0.5, seed=1).x_train)
    # Rows of a smaller subset are rows of the larger one (same seed): curves differ by added data.
    quarter = subset_train(ds, 0.25, seed=0)
    rows = {tuple(r) for r in half.x_train.tolist()}
    assert len(quarter.x_train) == 60 and all(tuple(r) in rows for r in quarter.x_train.tolist())
    tiny = subset_train(ds, 0.001, seed=0)
    assert torch.bincount(tiny.y_train).tolist() == [1, 1, 1]  # every class keeps a sample
    assert subset_train(ds, 1.0, seed=0) is ds
    for bad in (0, -0.5, 1.5):
        with pytest.raises(UserInputError, match="fraction must be in"):
            subset_train(ds, bad, seed=0)
