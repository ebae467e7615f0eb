"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), pixel/16.

The train/test split is fixed and stratified: within each class, in dataset order, samples alternate train,
test, train, ... (901 train, 896 test), whatever the ``seed``. The default attack radius is 0.1.
"""
from __future__ import annotations

import functools

import numpy as np

from ._base import ArrayDataset, DatasetInfo
from ._registry import register_dataset

# pixel statistics of the fixed training split, computed by _digits_stats() (tests check them)
INFO = DatasetInfo("digits", 10, (1, 8, 8), (0.3048,), (0.3761,), eps=0.1)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _digits_split(y: np.ndarray, split: str) -> np.ndarray:
    """Indices of the fixed split: within each class, in dataset order, train, test, train, test, ..."""
    rank = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        where = np.flatnonzero(y == c)
        rank[where] = np.arange(len(where))
    return np.flatnonzero(rank % 2 == (0 if split == "train" else 1))


def _digits_stats() -> tuple[float, float]:
    """Mean and standard deviation of all training-split pixels (the values in ``dataset_info('digits')``)."""
    x, y = _digits_arrays()
    train = x[_digits_split(y, "train")].astype(np.float64)
    return float(train.mean()), float(train.std())


def open_digits(split: str) -> ArrayDataset:
    x, y = _digits_arrays()
    idx = _digits_split(y, split)
    return ArrayDataset(x[idx], y[idx], INFO, "sklearn.datasets.load_digits")


register_dataset("digits", open_digits, info=INFO, needs_root=False,
                 layouts="bundled with scikit-learn (nothing to download)")
