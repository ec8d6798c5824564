"""Small data sets and the user data file format (DATA.npz).

``load_digits_split`` gives the 8x8 scikit-learn digits as (N, 1, 8, 8) float32 images in [0, 1]:
small enough to train and convert in seconds, so tests and the demo use it.
``load_npz`` reads user data without pickle and checks it before any model sees it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import SpikeportError

DIGITS_MAX = 16.0  # sklearn digits pixels are integers 0..16


class DataError(SpikeportError):
    """A data file is missing, unreadable or malformed; the message names the file and key."""


def load_digits_split(seed: int = 0, test_fraction: float = 0.25
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, y_train, x_test, y_test)``: float32 (N, 1, 8, 8) in [0, 1], int64 labels.

    The split is a seeded permutation, so the same seed always gives the same split.
    """
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction {test_fraction} must lie strictly between 0 and 1")
    data = load_digits()
    x = (np.asarray(data.images, dtype=np.float32) / DIGITS_MAX).reshape(-1, 1, 8, 8)
    y = np.asarray(data.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read DATA.npz: key ``x`` (floating, (N, ...)) and optional ``y`` (integer, (N,)).

    Returns ``(x as float32, y as int64 or None)``. Any problem raises DataError naming the file
    and the key. Never unpickles (``allow_pickle=False``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if not hasattr(archive, "files"):
        raise DataError(f"{path}: expected an .npz archive with key 'x', got a single array")
    with archive:
        if "x" not in archive.files:
            raise DataError(f"{path}: missing key 'x' (keys present: {sorted(archive.files)})")
        try:
            x = archive["x"]
            y = archive["y"] if "y" in archive.files else None
        except ValueError as e:
            raise DataError(f"{path}: cannot read array ({e}); object arrays are not allowed") from None
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: key 'x' has dtype {x.dtype}, expected a floating dtype (float32)")
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"{path}: key 'x' has shape {x.shape}, expected (N, ...) with N >= 1 samples")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: key 'x' contains NaN or infinity")
    if y is not None:
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: key 'y' has dtype {y.dtype}, expected an integer dtype")
        if y.ndim != 1:
            raise DataError(f"{path}: key 'y' has shape {y.shape}, expected (N,)")
        if len(y) != len(x):
            raise DataError(f"{path}: key 'y' has {len(y)} labels but key 'x' has {len(x)} samples")
        y = y.astype(np.int64)
    return x.astype(np.float32), y
