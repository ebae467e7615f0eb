"""Datasets as tensors ``x`` (N, C, H, W) float32 in [0,1] and ``y`` (N,) int64; nothing is ever downloaded.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), pixel/16. The train/test
  split is fixed and stratified: within each class, in dataset order, samples alternate train, test, train, ...
  (901 train, 896 test), whatever the ``seed``.
* ``cifar10`` / ``cifar100``: read from a local folder (``root``, else ``$LANDSCAPE_DATA``, else
  ``~/.cache/landscape/data``) holding the standard python version (``cifar-10-batches-py/data_batch_1..5``,
  ``test_batch``; ``cifar-100-python/train``, ``test``) or a ``cifar10.npz``/``cifar100.npz`` with ``x_train``,
  ``y_train``, ``x_test``, ``y_test``; ``root`` may also be the ``.npz`` file itself. The pickled batches are
  read by an unpickler that only builds numpy arrays, lists, dicts and bytes.

``n`` takes a deterministic stratified subset (seeded); ``add_label_noise`` flips labels symmetrically.
"""
from __future__ import annotations

import difflib
import functools
import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._base import LandscapeError
from .checkpoints.safe_pickle import ArrayUnpickler, Refused

__all__ = [
    "DataError", "DatasetInfo", "add_label_noise", "data_root", "dataset_info", "list_datasets", "load_dataset",
    "stratified_indices",
]

ENV_VAR = "LANDSCAPE_DATA"
DEFAULT_ROOT = Path("~/.cache/landscape/data")


class DataError(LandscapeError):
    """A dataset that is missing or malformed; the message names the file or folder."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes:
        name: dataset name.
        num_classes: number of classes.
        input_shape: (C, H, W).
        mean, std: per-channel statistics of the training inputs in [0,1] (for ``Normalized``).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


_INFO = {
    # digits: pixel statistics of the fixed training split, computed by _digits_stats() (tests check them)
    "digits": DatasetInfo("digits", 10, (1, 8, 8), (0.3048,), (0.3761,)),
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_CIFAR = {
    "cifar10": {"folder": "cifar-10-batches-py", "npz": "cifar10.npz", "labels": "labels",
                "train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    "cifar100": {"folder": "cifar-100-python", "npz": "cifar100.npz", "labels": "fine_labels",
                 "train": ("train",), "test": ("test",)},
}
_SPLITS = ("train", "test")


def list_datasets() -> list[str]:
    """Names accepted by ``load_dataset`` and ``dataset_info``."""
    return sorted(_INFO)


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key not in _INFO:
        close = difflib.get_close_matches(key, list(_INFO), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint} (available: {', '.join(list_datasets())})")
    return key


def dataset_info(name: str) -> DatasetInfo:
    """``DatasetInfo(name, num_classes, input_shape, mean, std)`` of ``name`` (see ``list_datasets()``).

    Raises:
        ValueError: unknown name (close names are suggested).
    """
    return _INFO[_check_name(name)]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$LANDSCAPE_DATA``, else ``~/.cache/landscape/data``."""
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    return Path(root).expanduser()


# ----------------------------------------------------------------------------------------------------------
# subsets and label noise
# ----------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------------------------------------

def _safe_unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return ArrayUnpickler(f, encoding="latin1").load()
    except Refused as exc:
        raise DataError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError) as exc:
        raise DataError(f"{path}: truncated or corrupt pickle ({type(exc).__name__}: {exc})") from None


def _layout_text(name: str, looked: list[Path]) -> str:
    spec = _CIFAR[name]
    files = ",".join(spec["train"] + spec["test"])
    where = ", ".join(str(p) for p in looked)
    return (f"{name} not found (looked in {where}); expected <root>/{spec['folder']}/{{{files}}} (the python "
            f"version of the dataset) or <root>/{spec['npz']} with x_train, y_train, x_test, y_test; pass root= "
            f"(CLI: --data-root) or set {ENV_VAR}; nothing is downloaded")


def _find_cifar(name: str, root: Path, split: str) -> tuple[str, Path]:
    """``("npz", file)`` or ``("pickle", folder)`` for the first layout present under ``root``."""
    spec = _CIFAR[name]
    if root.suffix == ".npz" or root.is_file():
        if not root.is_file():
            raise DataError(_layout_text(name, [root]))
        return "npz", root
    candidates = [root / spec["folder"], root]
    for folder in candidates:
        if folder.is_dir() and any((folder / f).exists() for f in spec["train"] + spec["test"]):
            missing = [f for f in spec[split] if not (folder / f).is_file()]
            if missing:
                raise DataError(f"{folder}: {name} {split} files missing: {', '.join(missing)}")
            return "pickle", folder
    npz = root / spec["npz"]
    if npz.is_file():
        return "npz", npz
    raise DataError(_layout_text(name, candidates + [npz]))


def _read_pickle_split(name: str, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) images and int64 labels from the python-pickle batches of ``split``."""
    spec = _CIFAR[name]
    xs, ys = [], []
    for fname in spec[split]:
        path = folder / fname
        batch = _safe_unpickle(path)
        if not isinstance(batch, dict):
            raise DataError(f"{path}: expected a dict batch, got {type(batch).__name__}")
        batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
        if "data" not in batch or spec["labels"] not in batch:
            raise DataError(f"{path}: batch lacks 'data' or {spec['labels']!r} (keys: {', '.join(map(str, batch))})")
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", None)
            raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got "
                            f"{type(data).__name__} {getattr(data, 'dtype', '')} {shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(_labels(batch[spec["labels"]], len(data), path))
        _check_values(xs[-1], ys[-1], _INFO[name].num_classes, path)
    return np.concatenate(xs), np.concatenate(ys)


def _labels(raw: Any, n: int, path: Path) -> np.ndarray:
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


def _check_npz_member(path: Path, zf: zipfile.ZipFile, key: str) -> None:
    """Check an ``.npy`` member's declared shape against its stored size before numpy allocates it."""
    info = zf.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1100 * info.compress_size + 1024:
        raise DataError(f"{path}: member {key} declares {info.file_size} bytes from {info.compress_size} (corrupt)")
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
        except Exception as exc:
            raise DataError(f"{path}: corrupt array {key} ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: array {key} holds Python objects; only numeric arrays are read")
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise DataError(f"{path}: array {key} declares shape {shape} ({math.prod(shape) * dtype.itemsize} bytes) but "
                        f"holds {info.file_size} bytes (truncated or corrupt)")


def _read_npz_split(name: str, path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    xk, yk = f"x_{split}", f"y_{split}"
    try:
        with zipfile.ZipFile(path) as zf:
            members = {m[:-4] for m in zf.namelist() if m.endswith(".npy")}
            if xk not in members or yk not in members:
                raise DataError(f"{path}: needs arrays {xk} and {yk}, found: {', '.join(sorted(members)) or 'none'}")
            _check_npz_member(path, zf, xk)
            _check_npz_member(path, zf, yk)
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz[xk], npz[yk]
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise DataError(f"{path}: unreadable .npz ({type(exc).__name__}: {exc})") from None
    return x, _labels(y, len(x), path)


def _to_nchw(x: np.ndarray, shape: tuple[int, int, int], path: Path) -> np.ndarray:
    """(N, C, H, W) view of NCHW or NHWC ``x``."""
    if x.ndim == 4 and tuple(x.shape[1:]) == shape:
        return x
    if x.ndim == 4 and tuple(x.shape[1:]) == (shape[1], shape[2], shape[0]):
        return x.transpose(0, 3, 1, 2)
    raise DataError(f"{path}: images must have shape (N, {', '.join(map(str, shape))}) or "
                    f"(N, {shape[1]}, {shape[2]}, {shape[0]}), got {x.shape}")


def _check_values(x: np.ndarray, y: np.ndarray, num_classes: int, path: Path) -> None:
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
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{path}: labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")


def _to_float(x: np.ndarray) -> torch.Tensor:
    out = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(out))


# ----------------------------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------------------------

def load_dataset(name: str, split: str = "test", *, root: str | os.PathLike | None = None, n: int | None = None,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset split as tensors.

    Args:
        name: ``digits``, ``cifar10`` or ``cifar100`` (``list_datasets()``).
        split: ``"train"`` or ``"test"``. Default ``"test"``.
        root: CIFAR folder or ``.npz`` file; default ``$LANDSCAPE_DATA`` or ``~/.cache/landscape/data``.
            Ignored for ``digits``.
        n: take a deterministic class-stratified subset of this size (``stratified_indices``); None: all.
        seed: seed of the subset (the digits train/test split itself never depends on it).

    Returns:
        ``(x, y)``: x float32 (N, C, H, W) in [0,1]; y int64 (N,).

    Raises:
        DataError: files missing (the message says where it looked and the expected layout) or malformed
            (NaN/Inf, float values outside [0,1], labels out of range, wrong shapes, unsafe pickles).
        ValueError: unknown name or split, ``n`` out of range.

    Example:
        >>> x, y = load_dataset("digits", "test", n=100)
        >>> tuple(x.shape), y.dtype
        ((100, 1, 8, 8), torch.int64)
    """
    key = _check_name(name)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {', '.join(_SPLITS)}, got {split!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))):
        raise TypeError(f"n must be an int or None, got {n!r}")
    info = _INFO[key]
    if key == "digits":
        x_all, y_all = _digits_arrays()
        idx = _digits_split(y_all, split)
        x, y = x_all[idx], y_all[idx]
    else:
        kind, source = _find_cifar(key, data_root(root), split)
        reader = _read_npz_split if kind == "npz" else _read_pickle_split
        x, y = reader(key, source, split)
        x = _to_nchw(x, info.input_shape, source)
        if kind == "npz":  # pickle batches are checked one file at a time
            _check_values(x, y, info.num_classes, source)
    if n is not None:
        if not 1 <= n <= len(y):
            raise ValueError(f"n must be between 1 and {len(y)} (the size of {key} {split}), got {n}")
        keep = stratified_indices(y, n, seed)
        x, y = x[keep], y[keep]
    return _to_float(x), torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
