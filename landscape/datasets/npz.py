"""``npz``: your own arrays in a numpy ``.npz`` file. ``root`` is the file, or a folder holding exactly one
``.npz`` file.

Arrays: ``x`` and ``y`` (one set, used for either split), or ``x_train``, ``y_train``, ``x_test``, ``y_test``
(a file with both kinds uses the per-split arrays). Images are (N, C, H, W) or (N, H, W, C) (or (N, H, W)
grayscale), uint8 0..255 or float in [0,1]; labels are (N,) or (N, 1) integers >= 0.

Arrays holding Python objects are refused (``allow_pickle=False``), and each array's declared size is checked
against the bytes the file holds before numpy allocates it. The split's array is held once and converted to
float batch by batch. The number of classes is the largest label in the file plus one (all splits), unless
option ``num_classes`` (CLI ``--data-arg num_classes=K``) says more.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import IMAGE_EPS, ArrayDataset, DataError, DatasetInfo, check_arrays, labels_array, to_nchw
from ._files import npz_members, read_npz_arrays
from ._registry import register_dataset

__all__ = ["open_npz"]

SPLITS = ("train", "test")
LAYOUTS = "<root> = a .npz file (or a folder holding one) with arrays x, y or x_train, y_train, x_test, y_test"


def find_npz(root: Path) -> Path:
    """``root`` itself when it is a file, else the single ``.npz`` file in the folder ``root``."""
    if root.is_file():
        return root
    if not root.is_dir():
        raise DataError(f"{root}: not found; npz expects {LAYOUTS}")
    found = sorted(p for p in root.iterdir() if p.suffix.lower() == ".npz" and p.is_file())
    if len(found) != 1:
        which = f"{len(found)} .npz files ({', '.join(p.name for p in found)})" if found else "no .npz file"
        raise DataError(f"{root}: holds {which}; pass the file itself as root (CLI: --data-root file.npz)")
    return found[0]


def split_keys(path: Path, members: set[str], split: str) -> tuple[str, str]:
    """``(x_<split>, y_<split>)`` when the file has per-split arrays, else ``(x, y)``."""
    if f"x_{split}" in members or f"y_{split}" in members:
        return f"x_{split}", f"y_{split}"
    if {"x", "y"} <= members:
        return "x", "y"
    raise DataError(f"{path}: needs arrays x and y, or x_{split} and y_{split}, found: "
                    f"{', '.join(sorted(members)) or 'none'}")


def _classes(path: Path, members: set[str], y: np.ndarray, num_classes: object) -> int:
    """The option, else one more than the largest label of every split in the file (so splits agree)."""
    if num_classes is not None:
        if isinstance(num_classes, str) and num_classes.strip().isdigit():
            num_classes = int(num_classes)
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"--data-arg num_classes must be a positive integer, got {num_classes!r}")
        return int(num_classes)
    others = [k for k in ("y_train", "y_test") if k in members]
    highest = int(y.max()) if len(y) else 0
    for (other,) in (read_npz_arrays(path, [k]) for k in others):
        if other.dtype.kind in "iu" and other.size:
            highest = max(highest, int(other.max()))
    return highest + 1


def open_npz(split: str, root: Path, num_classes: int | None = None) -> ArrayDataset:
    """The split's arrays of the ``.npz`` file at (or in) ``root``.

    Args:
        split: ``"train"`` or ``"test"`` (the same arrays when the file has only ``x`` and ``y``).
        root: the file, or a folder holding exactly one ``.npz``.
        num_classes: the number of classes; default the largest label in the file plus one.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r} (dataset npz)")
    path = find_npz(root)
    members = npz_members(path)
    xk, yk = split_keys(path, members, split)
    x, raw = read_npz_arrays(path, [xk, yk])
    y = labels_array(raw, len(x), path)
    if x.dtype.kind == "f" and x.dtype != np.float32:
        x = x.astype(np.float32)
    x = to_nchw(x, path)
    k = _classes(path, members, y, num_classes)
    check_arrays(x, y, k, path)
    info = DatasetInfo("npz", k, tuple(int(d) for d in x.shape[1:]), None, None, IMAGE_EPS, SPLITS)
    return ArrayDataset(x, y, info, str(path))


register_dataset("npz", open_npz, layouts=LAYOUTS)
