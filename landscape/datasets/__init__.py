"""Datasets: a registry of local readers (nothing is ever downloaded), subsets chosen by index, and batches
decoded as they are used.

``open_dataset(data, split)`` gives a :class:`LabelledDataset` (``ds[i] -> (x (C, H, W) float32 in [0,1], y)``,
``ds.targets``, ``ds.info``) for a registered name, ``file.py:fn``, ``(x, y)`` tensors or a torch ``Dataset``;
``select`` takes the stratified subset; ``batches`` / ``materialize`` decode it; ``load_dataset`` does all three
for the common case of a subset that fits in memory.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from . import cifar, digits, imagefolder, npz, svhn, tiny_imagenet  # noqa: F401 -- registers the readers
from ._base import ArrayDataset, DataError, DatasetInfo, LabelledDataset, Subset, data_root
from ._registry import dataset_info, list_datasets, open_dataset, register_dataset
from .stream import batches, materialize
from .subsets import add_label_noise, select, stratified_indices

__all__ = [
    "ArrayDataset", "DataError", "DatasetInfo", "LabelledDataset", "Subset", "add_label_noise", "as_tensors", "batches",
    "data_root", "dataset_info", "list_datasets", "load_dataset", "materialize", "open_dataset",
    "register_dataset", "select", "stratified_indices",
]


def load_dataset(data: Any, split: str = "test", *, root: str | os.PathLike | None = None,
                 n: int | str | None = None, seed: int = 0, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset split (or its stratified subset) as tensors in memory.

    Args:
        data: anything :func:`open_dataset` takes: a registered name (``list_datasets()``), ``file.py:fn``,
            ``(x, y)`` tensors or a torch ``Dataset``.
        split: ``"train"`` or ``"test"``. Default ``"test"``.
        root: folder or file holding the dataset; default ``$LANDSCAPE_DATA`` or ``~/.cache/landscape/data``.
            Ignored for ``digits``.
        n: a deterministic class-stratified subset of this size (``stratified_indices``); None or ``"all"``: all.
        seed: seed of the subset (the digits train/test split itself never depends on it).
        **options: dataset options, e.g. ``size=32`` for ``imagefolder`` (CLI ``--data-arg``).

    Returns:
        ``(x, y)``: x float32 (N, C, H, W) in [0,1]; y int64 (N,).

    Raises:
        DataError: files missing (the message says where it looked and the expected layouts) or malformed
            (NaN/Inf, float values outside [0,1], labels out of range, wrong shapes, unsafe pickles).
        ValueError: unknown name, split or option, ``n`` out of range.

    Example:
        >>> x, y = load_dataset("digits", "test", n=100)
        >>> tuple(x.shape), y.dtype
        ((100, 1, 8, 8), torch.int64)
    """
    if n is not None and not isinstance(n, str) and (isinstance(n, bool) or not isinstance(n, int)):
        raise TypeError(f"n must be an int, 'all' or None, got {n!r}")
    ds = select(open_dataset(data, split, root=root, **options), n, seed)
    return materialize(ds)


def as_tensors(x: Any, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, y)`` unchanged for tensors; a ``Dataset`` (or anything :func:`open_dataset` takes, with its test
    split) decoded whole, for the APIs that hold their samples in memory (slices, training)."""
    if isinstance(x, torch.Tensor) or y is not None:
        return x, y
    return materialize(open_dataset(x))
