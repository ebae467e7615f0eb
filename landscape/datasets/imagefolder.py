"""``imagefolder``: your own images, one folder per class: ``<root>/<class>/*.{png,jpg,jpeg,bmp,webp}`` (the
suffix in any case). Class names are sorted; a class's label is its index in that order.

Splits: when ``root`` holds ``train/`` and ``test/`` (or ``val/``) folders that are themselves class trees,
split ``"train"`` reads ``train/`` and ``"test"`` reads ``test/`` (else ``val/``). Otherwise ``root`` itself is
the dataset and is used for either split.

Anything else in the tree (files at the top level, non-image files or sub-folders inside class folders) is
skipped, with one note on stderr; hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are skipped
silently. An empty class folder is an error.

Option ``size`` (CLI ``--data-arg size=N``): resize every image to ``size`` x ``size`` (bilinear; usually the
model's input size). Without it every image must have the size of the first one, which sets
``info.input_shape``. Images are decoded as RGB (C = 3), one per item (:class:`~._files.ImageFiles`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import IMAGE_EPS, DataError, DatasetInfo
from ._files import IMAGE_SUFFIXES, ImageFiles, image_size, is_image, list_folder, note
from ._registry import register_dataset

__all__ = ["open_imagefolder"]

SPLITS = ("train", "test")
_PATTERN = "*.{" + ",".join(s[1:] for s in IMAGE_SUFFIXES) + "}"
LAYOUTS = (f"<root>/<class>/{_PATTERN}, or <root>/train/<class>/... with <root>/test/<class>/... "
           f"(or val/) for separate splits")
_HINT = "; pass --data-arg size=N (size=N in Python) to resize every image to NxN"


def _is_class_tree(folder: Path) -> bool:
    """A folder with at least one sub-folder that directly holds an image."""
    if not folder.is_dir():
        return False
    return any(any(is_image(f.name) for f in list_folder(d)[1]) for d in list_folder(folder)[0])


def split_folder(root: Path, split: str) -> Path:
    """``root/train`` or ``root/test`` (``root/val``) when both are class trees, else ``root``."""
    held_out = next((root / n for n in ("test", "val") if _is_class_tree(root / n)), None)
    if held_out is not None and _is_class_tree(root / "train"):
        return root / "train" if split == "train" else held_out
    return root


def scan(folder: Path) -> tuple[list[str], list[Path], list[int], list[Path]]:
    """``(classes, files, labels, skipped)`` of a class tree, in label then file-name order."""
    class_dirs, skipped = list_folder(folder)
    if not class_dirs:
        raise DataError(f"{folder}: no class folders; imagefolder expects {LAYOUTS}")
    files: list[Path] = []
    labels: list[int] = []
    for label, d in enumerate(class_dirs):
        nested, entries = list_folder(d)
        images = [e for e in entries if is_image(e.name)]
        skipped += nested + [e for e in entries if not is_image(e.name)]
        if not images:
            raise DataError(f"{d}: empty class folder (no {_PATTERN} images)")
        files += images
        labels += [label] * len(images)
    return [d.name for d in class_dirs], files, labels, skipped


def _size_option(size: object) -> int | None:
    if size is None:
        return None
    if isinstance(size, str) and size.strip().isdigit():  # as typed on the command line
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"--data-arg size must be a positive integer (the model's input size), got {size!r}")
    return int(size)


def open_imagefolder(split: str, root: Path, size: int | None = None) -> ImageFiles:
    """The class tree of ``split`` under ``root`` as image files and labels (one image header is read, for the
    size; nothing is decoded).

    Args:
        split: ``"train"`` or ``"test"`` (the same images when ``root`` has no ``train/`` and ``test/``).
        root: the folder.
        size: resize every image to ``size`` x ``size``; default: keep them, all must share one size.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r} (dataset imagefolder)")
    size = _size_option(size)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "folder not found"
        raise DataError(f"{root}: {what}; imagefolder expects {LAYOUTS}")
    folder = split_folder(root, split)
    classes, files, labels, skipped = scan(folder)
    if skipped:
        note(f"{folder}: skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} that are not "
             f"<class>/{_PATTERN} images (e.g. {skipped[0]})", key=f"imagefolder:{folder}")
    height, width = (size, size) if size is not None else image_size(files[0])
    info = DatasetInfo("imagefolder", len(classes), (3, height, width), None, None, IMAGE_EPS, SPLITS)
    return ImageFiles(files, labels, info, str(folder), size=size, hint=f" (the size of {files[0]}){_HINT}")


register_dataset("imagefolder", open_imagefolder, layouts=LAYOUTS)
