"""``tiny-imagenet`` (aliases ``tiny_imagenet``, ``tinyimagenet``): Tiny-ImageNet-200, 64x64 RGB, read from a
local folder. ``root`` is the ``tiny-imagenet-200`` folder itself or its parent (default ``$LANDSCAPE_DATA``,
else ``~/.cache/landscape/data``). Nothing is ever downloaded.

Two layouts are read:

* the download: ``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` with
  ``val/val_annotations.txt`` (tab separated: file name, wnid, bounding box);
* the validation set re-organised into class folders, as the official AdvLC code does:
  ``val/<wnid>/images/*.JPEG`` or ``val/<wnid>/*.JPEG``.

Split ``"train"`` reads ``train/``; split ``"test"`` reads ``val/``: Tiny-ImageNet's own test set has no labels,
so its validation set is the test set (as in AdvLC and most robust-overfitting papers).

A label is the index of the wnid in the sorted wnids (``wnids.txt`` when present, else the class folder names),
which is what torchvision's ``ImageFolder`` gives a class-folder tree. Samples are ordered by label, then file
name, in both layouts, so the two layouts give the same dataset. Grayscale JPEGs (the real set has some) are
decoded as RGB with three equal channels. Images are decoded one per item (:class:`~._files.ImageFiles`).
"""
from __future__ import annotations

from pathlib import Path

from ._base import ENV_VAR, DataError, DatasetInfo
from ._files import ImageFiles, is_image, list_folder
from ._registry import register_dataset

__all__ = ["INFO", "open_tiny_imagenet"]

INFO = DatasetInfo("tiny-imagenet", 200, (3, 64, 64), (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
FOLDER = "tiny-imagenet-200"
SPLIT_FOLDER = {"train": "train", "test": "val"}
LAYOUTS = (f"<root>/{FOLDER}/ (or <root> itself) with wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
           f"val/val_annotations.txt (the download), or val/<wnid>/[images/]*.JPEG (validation images in class "
           f"folders, as the AdvLC code re-organises them)")


def _find_folder(root: Path) -> Path:
    """The dataset folder: ``root/tiny-imagenet-200`` or ``root``, whichever has ``train/`` or ``val/``."""
    candidates = [root / FOLDER, root]
    for folder in candidates:
        if (folder / "train").is_dir() or (folder / "val").is_dir():
            return folder
    raise DataError(f"tiny-imagenet not found (looked in {', '.join(map(str, candidates))}); expected {LAYOUTS}; "
                    f"pass root= (CLI: --data-root) or set {ENV_VAR}; nothing is downloaded")


def _class_folders(split_dir: Path) -> list[Path]:
    # "images" is the download layout's image folder, never a wnid
    return [d for d in list_folder(split_dir)[0] if d.name != "images"]


def _wnids(folder: Path, split_dir: Path) -> list[str]:
    """Sorted wnids: from ``wnids.txt`` when present, else the class folders of ``train/`` (or of the split)."""
    listed = folder / "wnids.txt"
    if listed.is_file():
        wnids = sorted({line.strip() for line in listed.read_text().splitlines() if line.strip()})
        if not wnids:
            raise DataError(f"{listed}: no wnids listed")
    else:
        source = folder / "train" if (folder / "train").is_dir() else split_dir
        wnids = [d.name for d in _class_folders(source)]
        if not wnids:
            raise DataError(f"{source}: no class folders and no {listed}; expected {LAYOUTS}")
    if len(wnids) > INFO.num_classes:
        raise DataError(f"{listed if listed.is_file() else folder}: {len(wnids)} classes; Tiny-ImageNet has "
                        f"{INFO.num_classes}")
    return wnids


def _images_in(folder: Path) -> list[Path]:
    return [p for p in list_folder(folder)[1] if is_image(p.name)]


def _from_class_folders(split_dir: Path, index: dict[str, int]) -> tuple[list[Path], list[int]]:
    """``<wnid>/images/*.JPEG`` or ``<wnid>/*.JPEG`` under ``split_dir``, by label then file name."""
    files: list[Path] = []
    labels: list[int] = []
    folders = _class_folders(split_dir)
    if not folders:
        raise DataError(f"{split_dir}: no class folders; expected {LAYOUTS}")
    unknown = [d for d in folders if d.name not in index]
    if unknown:
        raise DataError(f"{unknown[0]}: class folder {unknown[0].name!r} is not one of the {len(index)} wnids")
    for d in folders:  # by name, which is label order: the wnids are sorted names too
        images = _images_in(d / "images" if (d / "images").is_dir() else d)
        if not images:
            raise DataError(f"{d}: class folder holds no images (*.JPEG directly or under images/)")
        files += images
        labels += [index[d.name]] * len(images)
    return files, labels


def _from_annotations(val_dir: Path, index: dict[str, int]) -> tuple[list[Path], list[int]]:
    """``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``, by label then file name."""
    table = val_dir / "val_annotations.txt"
    present = {p.name for p in list_folder(val_dir / "images")[1]}
    items: list[tuple[int, str]] = []
    for number, line in enumerate(table.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2:
            raise DataError(f"{table}: line {number} must be 'file<TAB>wnid...', got {line[:60]!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise DataError(f"{table}: line {number} names wnid {wnid!r}, which is not one of the wnids")
        items.append((index[wnid], name))
    missing = [name for _, name in items if name not in present]
    if missing:
        raise DataError(f"{val_dir / 'images'}: {len(missing)} annotated images are missing, e.g. {missing[0]}")
    if not items:
        raise DataError(f"{table}: no annotations")
    items.sort()
    return [val_dir / "images" / name for _, name in items], [label for label, _ in items]


def open_tiny_imagenet(split: str, root: Path) -> ImageFiles:
    """The split's image files and labels (nothing decoded)."""
    folder = _find_folder(root)
    split_dir = folder / SPLIT_FOLDER[split]
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: missing (tiny-imagenet split {split!r} reads {SPLIT_FOLDER[split]}/); "
                        f"expected {LAYOUTS}")
    index = {wnid: i for i, wnid in enumerate(_wnids(folder, split_dir))}
    annotated = (split_dir / "val_annotations.txt").is_file() and (split_dir / "images").is_dir()
    files, labels = (_from_annotations if annotated else _from_class_folders)(split_dir, index)
    return ImageFiles(files, labels, INFO, str(split_dir), hint=" (every Tiny-ImageNet image is 64x64)")


register_dataset("tiny-imagenet", open_tiny_imagenet, info=INFO, layouts=LAYOUTS,
                 aliases=("tiny_imagenet", "tinyimagenet"))
