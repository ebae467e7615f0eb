"""Subsets chosen by index from the labels alone (nothing decoded), and symmetric label noise."""
from __future__ import annotations

import numpy as np
import torch

from ._base import LabelledDataset, Subset

__all__ = ["add_label_noise", "select", "stratified_indices"]


def stratified_indices(y: np.ndarray | torch.Tensor, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a class-stratified random subset of size ``n``, sorted ascending.

    Each class gets ``n * count_c / N`` samples, rounded by largest remainder (ties to the smaller class
    label); within a class the samples are drawn without replacement by ``numpy.random.default_rng(seed)``.

    Args:
        y: (N,) integer labels.
        n: subset size, 1 <= n <= N.
        seed: random seed.

    Returns:
        (n,) int64 indices into ``y``.

    Raises:
        ValueError: ``n`` out of range.
    """
    y = np.asarray(y).reshape(-1)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {n!r}")
    if not 1 <= n <= len(y):
        raise ValueError(f"n must be between 1 and {len(y)} (the number of samples), got {n}")
    classes, counts = np.unique(y, return_counts=True)
    quota = n * counts / len(y)
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def select(ds: LabelledDataset, n: int | str | None = None, seed: int = 0) -> LabelledDataset:
    """The stratified subset of ``n`` samples (``stratified_indices`` on ``ds.targets``), or ``ds`` itself for
    ``n`` None/``"all"``; nothing is decoded.

    Raises:
        ValueError: ``n`` out of range (the message gives the dataset's size).
    """
    if n is None or (isinstance(n, str) and n.lower() == "all"):
        return ds
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, 'all' or None, got {n!r}")
    if not 1 <= n <= len(ds):
        raise ValueError(f"n must be between 1 and {len(ds)} (the size of {ds.info.name} at {ds.source or 'hand'}), "
                         f"got {n} (CLI: --n all takes every sample)")
    if n == len(ds):
        return ds
    return Subset(ds, stratified_indices(ds.targets, int(n), seed))


def add_label_noise(y: torch.Tensor, p: float, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Symmetric label noise: ``round(p * N)`` samples, chosen at random, get a different random class.

    A flipped label is drawn uniformly from the ``num_classes - 1`` classes other than the original, so it is
    never the original. ``y`` is not modified.

    Args:
        y: (N,) integer labels in [0, num_classes).
        p: fraction of labels to flip, in [0, 1].
        num_classes: number of classes (>= 2).
        seed: random seed.

    Returns:
        (N,) int64 noisy labels.

    Raises:
        TypeError: non-integer labels or num_classes.
        ValueError: p outside [0, 1], num_classes < 2, labels out of range.
    """
    y_t = torch.as_tensor(y)
    if y_t.dtype.is_floating_point or y_t.dtype == torch.bool or y_t.is_complex():
        raise TypeError(f"labels y must be integers, got {y_t.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 for label noise, got {num_classes}")
    if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
        raise ValueError(f"p must be a fraction in [0, 1], got {p!r}")
    y_np = y_t.reshape(-1).long().numpy().copy()
    if y_np.size and (y_np.min() < 0 or y_np.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{y_np.min()}, {y_np.max()}]")
    rng = np.random.default_rng(seed)
    k = int(round(p * y_np.size))
    idx = rng.choice(y_np.size, size=k, replace=False)
    y_np[idx] = (y_np[idx] + rng.integers(1, num_classes, size=k)) % num_classes
    return torch.from_numpy(y_np)
