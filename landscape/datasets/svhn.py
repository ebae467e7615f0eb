"""``svhn``: the Street View House Numbers "cropped digits" set (format 2), read from a local folder.

Layout: ``<root>/train_32x32.mat``, ``test_32x32.mat`` and (split ``"extra"``) ``extra_32x32.mat``, either in
``root`` itself or in ``<root>/svhn``; ``root`` defaults to ``$LANDSCAPE_DATA``, else ``~/.cache/landscape/data``.
Each file is MATLAB v5 with ``X`` (32, 32, 3, N) uint8 images and ``y`` (N, 1) labels 1..10, where 10 means the
digit 0 (labels here are the digits themselves, 0..9). Nothing is ever downloaded.

A split's uint8 array is held once, as read; it is seen as (N, C, H, W) through a transposed view, so each
batch is copied and converted to float only when it is used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import ENV_VAR, ArrayDataset, DataError, DatasetInfo, check_arrays, labels_array
from ._registry import register_dataset

__all__ = ["INFO", "open_svhn"]

INFO = DatasetInfo("svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                   splits=("train", "test", "extra"))
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
LAYOUTS = "<root>/{train,test,extra}_32x32.mat or <root>/svhn/{train,test,extra}_32x32.mat (the format-2 .mat files)"


def _find_svhn(root: Path, split: str) -> Path:
    """The ``.mat`` file of ``split``, in ``root`` or ``root/svhn``."""
    candidates = [root / FILES[split], root / "svhn" / FILES[split]]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"svhn {split} split not found (looked for {', '.join(map(str, candidates))}); expected "
                    f"{LAYOUTS}; pass root= (CLI: --data-root) or set {ENV_VAR}; nothing is downloaded")


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (32, 32, 3, N) uint8 and ``y`` (N,) raw labels from an SVHN ``.mat`` file."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except NotImplementedError:  # scipy's answer to v7.3 (HDF5) files
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) files are not read; expected the original v5 .mat file") \
            from None
    except Exception as exc:  # scipy raises many kinds (ValueError, TypeError, MatReadError...) for bad bytes
        raise DataError(f"{path}: unreadable .mat file ({type(exc).__name__}: {exc})") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: needs variables X and y, found: "
                        f"{', '.join(k for k in mat if not k.startswith('__')) or 'none'}")
    x = mat["X"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X must be a uint8 array of shape (32, 32, 3, N), got "
                        f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    return x, labels_array(mat["y"], x.shape[3], path)


def svhn_labels(raw: np.ndarray) -> np.ndarray:
    """Digits 0..9 from SVHN's labels 1..10 (10 is the digit 0)."""
    return np.where(raw == 10, 0, raw).astype(np.int64)


def open_svhn(split: str, root: Path) -> ArrayDataset:
    """The split's images as an (N, 3, 32, 32) view of the file's (32, 32, 3, N) array (no copy)."""
    path = _find_svhn(root, split)
    x, raw = _read_mat(path)
    y = svhn_labels(raw)
    nchw = x.transpose(3, 2, 0, 1)  # (H, W, C, N) -> (N, C, H, W): a view, copied batch by batch
    check_arrays(nchw, y, INFO.num_classes, path)
    return ArrayDataset(nchw, y, INFO, str(path))


register_dataset("svhn", open_svhn, info=INFO, layouts=LAYOUTS)
