"""What every dataset is: a map-style ``torch.utils.data.Dataset`` of ``(x (C, H, W) float32 in [0,1], y int)``
pairs that also knows its labels (``targets``, read without decoding a single image) and its facts (``info``).

Subsets are chosen by index over ``targets``; images are decoded batch by batch when they are used, so memory
follows the batch, not the dataset (:mod:`landscape.datasets.stream`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .._base import LandscapeError

__all__ = ["ArrayDataset", "DataError", "DatasetInfo", "LabelledDataset", "Subset", "check_arrays", "data_root",
           "labels_array", "to_nchw"]

ENV_VAR = "LANDSCAPE_DATA"
DEFAULT_ROOT = Path("~/.cache/landscape/data")
IMAGE_EPS = 8 / 255
"""The field's standard L-inf radius for natural-image sets (CIFAR, SVHN, Tiny-ImageNet, user images)."""


class DataError(LandscapeError):
    """A dataset that is missing or malformed; the message names the file or folder."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes:
        name: dataset name.
        num_classes: number of classes.
        input_shape: (C, H, W).
        mean, std: per-channel statistics of the training inputs in [0,1] (for ``Normalized``); ``None`` where
            unknown (user data).
        eps: the default attack radius in [0,1] pixel units (8/255 for natural images, 0.1 for digits).
        splits: the split names the dataset has.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    eps: float = IMAGE_EPS
    splits: tuple[str, ...] = ("train", "test")


class LabelledDataset(Dataset):
    """Base of every dataset here: ``ds[i] -> (x (C, H, W) float32 in [0,1], y int)``, ``len(ds)``, plus

    * ``targets``: (N,) int64 numpy labels, known without decoding images;
    * ``info``: :class:`DatasetInfo`;
    * ``source``: the file or folder it reads (for messages).
    """

    targets: np.ndarray
    info: DatasetInfo
    source: str = ""

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:  # pragma: no cover - abstract
        raise NotImplementedError


class ArrayDataset(LabelledDataset):
    """Images held as one array (uint8 0..255 or float in [0,1], NCHW), converted to float32 per item.

    Args:
        x: (N, C, H, W) numpy array or tensor; uint8 is scaled by 1/255.
        y: (N,) integer labels.
        info: the dataset's facts.
        source: file or description for messages.
    """

    def __init__(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, info: DatasetInfo,
                 source: str = ""):
        self.x = x
        self.targets = np.ascontiguousarray(np.asarray(y), dtype=np.int64)
        self.info = info
        self.source = source

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.x[i]
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.ascontiguousarray(item))
        item = item.to(torch.float32) / 255.0 if item.dtype == torch.uint8 else item.to(torch.float32)
        return item, int(self.targets[i])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        # one fancy-indexing copy per batch instead of one per item (the DataLoader's batched fetch)
        idx = np.asarray(indices, dtype=np.int64)
        xs = self.x[idx] if isinstance(self.x, np.ndarray) else self.x[torch.from_numpy(idx)]
        if isinstance(xs, np.ndarray):
            xs = torch.from_numpy(np.ascontiguousarray(xs))
        xs = xs.to(torch.float32) / 255.0 if xs.dtype == torch.uint8 else xs.to(torch.float32)
        return [(xs[j], int(self.targets[k])) for j, k in enumerate(idx)]


class Subset(LabelledDataset):
    """``dataset`` restricted to ``indices`` (in the given order); ``targets`` follow."""

    def __init__(self, dataset: LabelledDataset, indices: Sequence[int] | np.ndarray):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = dataset.targets[self.indices]
        self.info = dataset.info
        self.source = dataset.source

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.dataset[int(self.indices[i])]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        inner = [int(self.indices[i]) for i in indices]
        many = getattr(self.dataset, "__getitems__", None)
        return many(inner) if many is not None else [self.dataset[i] for i in inner]


def with_info(info: DatasetInfo, **changes: Any) -> DatasetInfo:
    return replace(info, **changes)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$LANDSCAPE_DATA``, else ``~/.cache/landscape/data``."""
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    return Path(root).expanduser()


def labels_array(raw: Any, n: int, path: Path | str) -> np.ndarray:
    """(n,) int64 labels from an array or list; a (n, 1) column is flattened."""
    try:
        y = np.asarray(raw)
    except Exception:
        raise DataError(f"{path}: labels are not an array or list of integers") from None
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be integers, got dtype {y.dtype}")
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: {n} images but labels of shape {y.shape}")
    return y.astype(np.int64)


def to_nchw(x: np.ndarray, path: Path | str, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """(N, C, H, W) view of NCHW or NHWC ``x``; with ``shape`` the layout must match it, else a channel axis of
    1, 3 or 4 entries decides (NCHW when both ends could be channels and the images are not 1x1...)."""
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: images must be a 4-d array (N, C, H, W) or (N, H, W, C), got shape {x.shape}")
    if shape is not None:
        if tuple(x.shape[1:]) == tuple(shape):
            return x
        if tuple(x.shape[1:]) == (shape[1], shape[2], shape[0]):
            return x.transpose(0, 3, 1, 2)
        raise DataError(f"{path}: images must have shape (N, {', '.join(map(str, shape))}) or "
                        f"(N, {shape[1]}, {shape[2]}, {shape[0]}), got {x.shape}")
    if x.shape[1] in (1, 3, 4) and x.shape[1] < x.shape[-1]:
        return x
    if x.shape[-1] in (1, 3, 4):
        return x.transpose(0, 3, 1, 2)
    if x.shape[1] in (1, 3, 4):
        return x
    raise DataError(f"{path}: cannot tell the channel axis of images of shape {x.shape} (expected 1, 3 or 4 "
                    f"channels first or last)")


def check_arrays(x: np.ndarray, y: np.ndarray, num_classes: int | None, path: Path | str) -> None:
    """Images uint8 or finite float in [0,1], labels in [0, num_classes); DataError naming ``path`` otherwise."""
    if len(x) == 0:
        raise DataError(f"{path}: no samples")
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            raise DataError(f"{path}: images contain {int((~finite).sum())} NaN/Inf values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{path}: float images must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    elif x.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 (0..255) or float in [0, 1], got dtype {x.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: labels must be >= 0, got {y.min()}")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise DataError(f"{path}: labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
