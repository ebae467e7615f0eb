"""Data the caller already holds, as a :class:`LabelledDataset`: ``(x, y)`` tensors/arrays or any torch
``Dataset`` of ``(image, label)`` pairs (images as tensors, arrays or PIL images)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ._base import ArrayDataset, DataError, DatasetInfo, LabelledDataset, check_arrays, labels_array, to_nchw

__all__ = ["as_image_tensor", "from_arrays", "from_torch_dataset", "is_pair"]


def is_pair(data: Any) -> bool:
    """``(x, y)`` of tensors/arrays."""
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in data))


def from_arrays(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, name: str = "tensors",
                source: str = "(x, y)") -> ArrayDataset:
    """``(x, y)`` as a dataset: x (N, C, H, W) or (N, H, W, C), uint8 or float in [0,1]; y (N,) integers.

    Raises:
        DataError: NaN/Inf, values outside [0,1], negative labels, shapes that disagree.
    """
    x_np = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y_np = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    y_np = labels_array(y_np, len(x_np), source)
    if x_np.dtype.kind == "f" and x_np.dtype != np.float32:
        x_np = x_np.astype(np.float32)
    x_np = to_nchw(x_np, source)
    check_arrays(x_np, y_np, None, source)
    info = DatasetInfo(name, int(y_np.max()) + 1, tuple(int(d) for d in x_np.shape[1:]))
    return ArrayDataset(x_np, y_np, info, source)


def as_image_tensor(img: Any, where: str) -> torch.Tensor:
    """(C, H, W) float32 in [0,1] from a tensor, array (CHW or HWC; uint8 or float) or PIL image."""
    if hasattr(img, "convert") and hasattr(img, "mode"):  # a PIL image
        img = np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img)
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(np.ascontiguousarray(img))
    if not isinstance(img, torch.Tensor):
        raise DataError(f"{where}: an image must be a tensor, array or PIL image, got {type(img).__name__}")
    if img.dim() == 2:
        img = img[None]
    if img.dim() != 3:
        raise DataError(f"{where}: an image must have 2 or 3 dimensions, got shape {tuple(img.shape)}")
    if img.shape[0] not in (1, 3, 4) and img.shape[-1] in (1, 3, 4):
        img = img.permute(2, 0, 1)
    return img.to(torch.float32) / 255.0 if img.dtype == torch.uint8 else img.to(torch.float32)


class TorchDataset(LabelledDataset):
    """A user's ``Dataset`` of ``(image, label)`` pairs; labels are read from ``targets``/``labels`` when it has
    them (torchvision style), else by one pass over the items."""

    def __init__(self, dataset: Dataset, *, name: str = "dataset", source: str = ""):
        self.dataset = dataset
        self.source = source or type(dataset).__name__
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise DataError(f"{self.source}: the dataset is empty")
        known = next((getattr(dataset, a) for a in ("targets", "labels") if hasattr(dataset, a)), None)
        if known is not None and len(known) == n:
            self.targets = labels_array(np.asarray(known), n, self.source)
        else:
            self.targets = np.array([self._label(dataset[i][1], i) for i in range(n)], dtype=np.int64)
        if self.targets.min() < 0:
            raise DataError(f"{self.source}: labels must be >= 0, got {self.targets.min()}")
        first = self[0][0]
        classes = getattr(dataset, "classes", None)
        k = max(int(self.targets.max()) + 1, len(classes) if isinstance(classes, (list, tuple)) else 0)
        self.info = DatasetInfo(name, k, tuple(int(d) for d in first.shape))

    def _label(self, y: Any, i: int) -> int:
        if isinstance(y, torch.Tensor) and y.numel() == 1:
            y = y.item()
        if isinstance(y, (np.integer, int)) and not isinstance(y, bool):
            return int(y)
        raise DataError(f"{self.source}: item {i} has label {y!r}; labels must be integers")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"{self.source}: item {i} must be an (image, label) pair, got {type(item).__name__}")
        return as_image_tensor(item[0], f"{self.source} item {i}"), int(self.targets[i])


def from_torch_dataset(dataset: Dataset, *, name: str = "dataset", source: str = "") -> LabelledDataset:
    """Wrap a torch ``Dataset`` of ``(image, label)`` pairs (a :class:`LabelledDataset` is returned as is)."""
    if isinstance(dataset, LabelledDataset):
        return dataset
    if not hasattr(dataset, "__len__"):
        raise TypeError(f"{type(dataset).__name__}: only map-style datasets (with __len__ and __getitem__) are "
                        f"supported")
    return TorchDataset(dataset, name=name, source=source)
