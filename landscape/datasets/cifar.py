"""``cifar10`` / ``cifar100``, read from a local folder (``root``, else ``$LANDSCAPE_DATA``, else
``~/.cache/landscape/data``) holding the standard python version (``cifar-10-batches-py/data_batch_1..5``,
``test_batch``; ``cifar-100-python/train``, ``test``) or a ``cifar10.npz``/``cifar100.npz`` with ``x_train``,
``y_train``, ``x_test``, ``y_test``; ``root`` may also be the ``.npz`` file itself. The pickled batches are read by
an unpickler that only builds numpy arrays, lists, dicts and bytes. Nothing is ever downloaded.
"""
from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoints.safe_pickle import ArrayUnpickler, Refused
from ._base import ENV_VAR, ArrayDataset, DataError, DatasetInfo, check_arrays, labels_array, to_nchw
from ._files import read_npz_arrays
from ._registry import register_dataset

__all__ = ["INFO", "open_cifar"]

INFO = {
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_CIFAR = {
    "cifar10": {"folder": "cifar-10-batches-py", "npz": "cifar10.npz", "labels": "labels",
                "train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    "cifar100": {"folder": "cifar-100-python", "npz": "cifar100.npz", "labels": "fine_labels",
                 "train": ("train",), "test": ("test",)},
}


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
        ys.append(labels_array(batch[spec["labels"]], len(data), path))
        check_arrays(xs[-1], ys[-1], INFO[name].num_classes, path)
    return np.concatenate(xs), np.concatenate(ys)


def _read_npz_split(name: str, path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_npz_arrays(path, (f"x_{split}", f"y_{split}"))
    return x, labels_array(y, len(x), path)


def open_cifar(name: str, split: str, root: Path) -> ArrayDataset:
    """The uint8 images of one split, held once; converted to float per batch."""
    info = INFO[name]
    kind, source = _find_cifar(name, root, split)
    reader = _read_npz_split if kind == "npz" else _read_pickle_split
    x, y = reader(name, source, split)
    x = to_nchw(x, source, info.input_shape)
    if kind == "npz":  # pickle batches are checked one file at a time
        check_arrays(x, y, info.num_classes, source)
    return ArrayDataset(x, y, info, str(source))


def _layouts(name: str) -> str:
    spec = _CIFAR[name]
    return (f"<root>/{spec['folder']}/{{{','.join(spec['train'] + spec['test'])}}} (the python version) or "
            f"<root>/{spec['npz']} (x_train, y_train, x_test, y_test)")


for _name in INFO:
    register_dataset(_name, functools.partial(open_cifar, _name), info=INFO[_name], layouts=_layouts(_name))
