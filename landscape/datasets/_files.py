"""Reading dataset files safely, shared by the readers: image files decoded one per item (:class:`ImageFiles`,
used by ``imagefolder`` and ``tiny-imagenet``) and ``.npz`` arrays checked before numpy allocates them (used by
``cifar10``/``cifar100`` and ``npz``).

Images are decoded with Pillow, always as RGB (C = 3: grayscale and palette images get three equal or mapped
channels). A truncated or corrupt file is a :class:`DataError` naming it: ``img.load()`` runs inside the ``try``
and ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is left False, so a short file is never silently padded.
"""
from __future__ import annotations

import math
import os
import sys
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ._base import DataError, DatasetInfo, LabelledDataset

__all__ = ["IMAGE_SUFFIXES", "ImageFiles", "check_npz_member", "decode_image", "image_size", "is_image",
           "list_folder", "note", "npz_members", "read_npz_arrays"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_NOTES_SHOWN: set[str] = set()


def note(text: str, *, key: str) -> None:
    """Print ``landscape: note: text`` on stderr once per process and ``key``."""
    if key in _NOTES_SHOWN:
        return
    _NOTES_SHOWN.add(key)
    print(f"landscape: note: {text}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- images

def is_image(name: str | os.PathLike) -> bool:
    """An image file name by its suffix (case-insensitive); hidden files (``.DS_Store``, ``._x.png``) are not."""
    base = os.path.basename(os.fspath(name))
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_SUFFIXES


def list_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(sub-folders, other entries)`` of ``folder``, each sorted by name, hidden names left out. One
    ``scandir`` pass: the entry types come with the listing (no stat per file in folders of thousands)."""
    dirs: list[Path] = []
    others: list[Path] = []
    with os.scandir(folder) as entries:
        for e in entries:
            if not e.name.startswith("."):
                (dirs if e.is_dir() else others).append(folder / e.name)
    return sorted(dirs, key=lambda p: p.name), sorted(others, key=lambda p: p.name)


def _corrupt(path: str, exc: BaseException) -> DataError:
    from PIL import UnidentifiedImageError

    if isinstance(exc, FileNotFoundError):
        return DataError(f"{path}: image file not found (was it moved after the dataset was listed?)")
    if isinstance(exc, UnidentifiedImageError):  # its own message repeats the path
        return DataError(f"{path}: not an image Pillow can read (unknown format or corrupt header)")
    return DataError(f"{path}: truncated or corrupt image ({type(exc).__name__}: {exc})")


def _pil_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image

    # OSError covers UnidentifiedImageError and "image file is truncated"; plugins also raise these for bad data
    return OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image from its header (nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
    except _pil_errors() as exc:
        raise _corrupt(os.fspath(path), exc) from None
    return height, width


def decode_image(path: str | os.PathLike, *, size: int | None = None, expect: tuple[int, int] | None = None,
                 hint: str = "") -> torch.Tensor:
    """(3, H, W) float32 in [0,1] from an image file, as RGB.

    Args:
        path: the file.
        size: resize to ``size`` x ``size`` (bilinear) when given.
        expect: ``(H, W)`` every image must have when ``size`` is None (a DataError otherwise).
        hint: appended to the size-mismatch message (what to do about it).
    """
    from PIL import Image

    where = os.fspath(path)
    try:
        with Image.open(where) as img:
            img.load()  # decode here, inside the try: a truncated file raises now, not later
            rgb = img.convert("RGB")
    except _pil_errors() as exc:
        raise _corrupt(where, exc) from None
    if size is not None:
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    elif expect is not None and (rgb.height, rgb.width) != tuple(expect):
        raise DataError(f"{where}: image is {rgb.height}x{rgb.width} (HxW) but the dataset's images are "
                        f"{expect[0]}x{expect[1]}{hint}")
    pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8))  # (H, W, 3), a writable copy
    return pixels.permute(2, 0, 1).contiguous().to(torch.float32) / 255.0


class ImageFiles(LabelledDataset):
    """Image files with known labels, decoded one per item (``decodes``: the DataLoader gets worker processes).

    The constructor only holds the file names and labels; nothing is opened until an item is asked for.

    Args:
        files: one image file per sample.
        targets: (N,) integer labels.
        info: the dataset's facts; ``info.input_shape[1:]`` is the size every image must have (after resizing).
        source: the folder, for messages.
        size: resize every image to ``size`` x ``size`` (``info.input_shape`` must say so).
        hint: appended to a size-mismatch message.
    """

    decodes = True

    def __init__(self, files: Sequence[str | os.PathLike], targets: Sequence[int] | np.ndarray, info: DatasetInfo,
                 source: str, *, size: int | None = None, hint: str = ""):
        self.files = [os.fspath(f) for f in files]  # plain strings: cheap to send to worker processes
        self.targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        if len(self.files) != len(self.targets):
            raise ValueError(f"{len(self.files)} files but {len(self.targets)} labels")
        self.info = info
        self.source = source
        self.size = size
        self.hint = hint

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = decode_image(self.files[i], size=self.size, expect=self.info.input_shape[1:], hint=self.hint)
        return x, int(self.targets[i])


# ---------------------------------------------------------------------------------------------- .npz

def check_npz_member(path: Path, zf: zipfile.ZipFile, key: str) -> None:
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


def _unreadable(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: unreadable .npz ({type(exc).__name__}: {exc})")


def npz_members(path: Path) -> set[str]:
    """Names of the arrays in an ``.npz`` file (nothing loaded)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return {m[:-4] for m in zf.namelist() if m.endswith(".npy")}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise _unreadable(path, exc) from None


def read_npz_arrays(path: Path, keys: Sequence[str]) -> list[np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` file, each checked (numeric, declared size held) before it is loaded;
    pickled objects are refused (``allow_pickle=False``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {m[:-4] for m in zf.namelist() if m.endswith(".npy")}
            if any(k not in members for k in keys):
                raise DataError(f"{path}: needs arrays {' and '.join(keys)}, found: "
                                f"{', '.join(sorted(members)) or 'none'}")
            for k in keys:
                check_npz_member(path, zf, k)
        with np.load(path, allow_pickle=False) as npz:
            return [npz[k] for k in keys]
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise _unreadable(path, exc) from None
