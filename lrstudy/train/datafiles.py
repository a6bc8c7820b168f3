"""Readers for user data files: `npz:PATH` and `idx:DIR` (MNIST / Fashion-MNIST IDX format).

They return raw numpy arrays in (x_train, y_train, x_test, y_test) order; `lrstudy.train.data` validates
them and turns them into tensors. Every malformed file is a one-line `UserInputError` naming it.
"""

from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lrstudy.errors import UserInputError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = {  # key -> (file name without .gz, IDX magic)
    "x_train": ("train-images-idx3-ubyte", 0x00000803),
    "y_train": ("train-labels-idx1-ubyte", 0x00000801),
    "x_test": ("t10k-images-idx3-ubyte", 0x00000803),
    "y_test": ("t10k-labels-idx1-ubyte", 0x00000801),
}


def read_npz(path: Path) -> list[np.ndarray]:
    """The four arrays of an .npz file (no pickles), in NPZ_KEYS order."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise UserInputError(
                    f"{path}: missing arrays {', '.join(missing)} (need {', '.join(NPZ_KEYS)})"
                )
            arrays = [f[k] for k in NPZ_KEYS]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as e:
        # AttributeError: a plain .npy file loads as an array, which has no .files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserInputError(f"{path}: not a readable .npz with plain arrays ({first})") from None
    return arrays


def idx_file(directory: Path, base: str) -> Path | None:
    for candidate in (directory / base, directory / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (unsigned-byte data): 4-byte magic, big-endian uint32 dims, then the data."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise UserInputError(f"{path}: cannot read ({e})") from None
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        shown = "fewer than 4 bytes" if found is None else f"0x{found:08x}"
        raise UserInputError(f"{path}: bad IDX magic: found {shown}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserInputError(f"{path}: IDX header truncated ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(dims)):
        raise UserInputError(
            f"{path}: IDX dims {dims} need {int(np.prod(dims))} data bytes, found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_dir(directory: Path) -> list[np.ndarray]:
    """The four arrays of a folder of MNIST-style IDX files, in NPZ_KEYS order."""
    arrays = {}
    for key, (base, magic) in IDX_FILES.items():
        path = idx_file(directory, base) or directory / base  # a vanished file fails in _read_idx
        arrays[key] = (path, _read_idx(path, magic))
    for split in ("train", "test"):
        (xp, x), (yp, y) = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise UserInputError(f"{xp} has {len(x)} images but {yp} has {len(y)} labels")
    return [arrays[k][1] for k in NPZ_KEYS]
