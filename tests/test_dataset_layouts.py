"""Dataset readers on miniature copies of each layout, built here with known pixels and labels: SVHN ``.mat``,
both Tiny-ImageNet layouts, ``imagefolder`` trees, ``.npz`` arrays; their errors, also across DataLoader workers."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from scipy.io import savemat

from landscape.datasets import (
    DataError, DatasetInfo, dataset_info, load_dataset, open_dataset, select, stratified_indices,
)
from landscape.datasets.stream import batches, default_workers, materialize


def _save(path: Path, pixels: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kw)
    return path


def _pixels(seed: int, h: int, w: int, gray: bool = False) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)


def _chw(pixels: np.ndarray) -> np.ndarray:
    """What a reader must return for an RGB (H, W, 3) or grayscale (H, W) uint8 image."""
    rgb = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels
    return rgb.transpose(2, 0, 1).astype(np.float32) / 255


def _pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return _chw(np.asarray(img.convert("RGB")))


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _all(ds, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return materialize(ds, batch_size=4, workers=workers)


# ---------------------------------------------------------------------------------------------- SVHN

def _svhn_file(path: Path, seed: int, labels: list[int]) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"X": x, "y": np.array(labels, dtype=np.uint8)[:, None]})
    return x


def test_svhn_reads_mat_files_and_maps_label_10_to_digit_0(tmp_path):
    x_test = _svhn_file(tmp_path / "svhn" / "test_32x32.mat", 0, [10, 1, 2, 10, 9])
    x_extra = _svhn_file(tmp_path / "extra_32x32.mat", 1, [3, 10])
    ds = open_dataset("svhn", "test", root=tmp_path)
    assert ds.targets.tolist() == [0, 1, 2, 0, 9] and ds.info == dataset_info("svhn")
    assert ds.source == str(tmp_path / "svhn" / "test_32x32.mat")
    x, y = _all(ds)
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [0, 1, 2, 0, 9]
    np.testing.assert_array_equal(x.numpy(), x_test.transpose(3, 2, 0, 1).astype(np.float32) / 255)
    assert x[3, 1, 4, 7].item() == pytest.approx(x_test[4, 7, 1, 3] / 255)  # X is (H, W, C, N)
    assert torch.equal(ds[2][0], x[2])
    x, y = load_dataset("svhn", "extra", root=tmp_path)  # root itself holds extra_32x32.mat
    np.testing.assert_array_equal(x.numpy(), x_extra.transpose(3, 2, 0, 1).astype(np.float32) / 255)
    assert y.tolist() == [3, 0]


def test_svhn_info_and_errors(tmp_path):
    info = dataset_info("svhn")
    assert info == DatasetInfo("svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                               8 / 255, ("train", "test", "extra"))
    with pytest.raises(DataError) as err:
        load_dataset("svhn", "train", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "train_32x32.mat") in msg and str(tmp_path / "svhn" / "train_32x32.mat") in msg
    assert "\n" not in msg
    _svhn_file(tmp_path / "test_32x32.mat", 0, [1, 11])
    with pytest.raises(DataError, match=r"test_32x32\.mat: labels must lie in \[0, 10\), got range \[1, 11\]"):
        load_dataset("svhn", "test", root=tmp_path)
    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match=r"X must be a uint8 array of shape \(32, 32, 3, N\)"):
        load_dataset("svhn", "test", root=tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError, match=r"test_32x32\.mat: unreadable \.mat file"):
        load_dataset("svhn", "test", root=tmp_path)
    with pytest.raises(ValueError, match="split must be one of train, test, extra"):
        open_dataset("svhn", "val", root=tmp_path)


# ---------------------------------------------------------------------------------------------- Tiny-ImageNet

# wnids.txt lists them unsorted: labels follow the sorted order n01 -> 0, n02 -> 1, n03 -> 2
WNIDS = ["n03", "n01", "n02"]
LABEL = {"n01": 0, "n02": 1, "n03": 2}
VAL = {"val_0.JPEG": "n02", "val_1.JPEG": "n03", "val_2.JPEG": "n01", "val_3.JPEG": "n02", "val_4.JPEG": "n01",
       "val_10.JPEG": "n03"}
GRAY = "val_3.JPEG"


def _tiny(parent: Path, layout: str = "download", images_dir: bool = True) -> Path:
    """A miniature tiny-imagenet-200 under ``parent`` (same pixels whatever the layout)."""
    root = parent / "tiny-imagenet-200"
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for k, wnid in enumerate(WNIDS):
        for j in range(2):
            _save(root / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", _pixels(10 * k + j, 64, 64))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    lines = []
    for i, (name, wnid) in enumerate(VAL.items()):
        if layout == "download":
            folder = root / "val" / "images"
        else:
            folder = root / "val" / wnid / ("images" if images_dir else "")
        _save(folder / name, _pixels(100 + i, 64, 64, gray=name == GRAY))
        lines.append(f"{name}\t{wnid}\t1\t2\t60\t61")
    if layout == "download":
        (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_tiny_imagenet_download_layout_labels_and_pixels(tmp_path):
    root = _tiny(tmp_path)
    train = open_dataset("tiny-imagenet", "train", root=tmp_path)
    assert train.targets.tolist() == [0, 0, 1, 1, 2, 2] and type(train).decodes and default_workers(train) >= 0
    assert [Path(f).name for f in train.files] == ["n01_0.JPEG", "n01_1.JPEG", "n02_0.JPEG", "n02_1.JPEG",
                                                   "n03_0.JPEG", "n03_1.JPEG"]
    x, y = _all(train)
    assert x.shape == (6, 3, 64, 64) and y.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(x[2].numpy(), _pil_rgb(root / "train" / "n02" / "images" / "n02_0.JPEG"))
    test = open_dataset("tiny-imagenet", "test", root=tmp_path)
    expected = sorted((LABEL[w], n) for n, w in VAL.items())  # by label, then file name
    assert [Path(f).name for f in test.files] == [n for _, n in expected]
    assert test.targets.tolist() == [0, 0, 1, 1, 2, 2]
    x, y = _all(test)
    for i, (label, name) in enumerate(expected):
        assert y[i].item() == label == LABEL[VAL[name]]
        np.testing.assert_array_equal(x[i].numpy(), _pil_rgb(root / "val" / "images" / name))
    gray = [n for _, n in expected].index(GRAY)
    assert torch.equal(x[gray, 0], x[gray, 1]) and torch.equal(x[gray, 1], x[gray, 2])
    with Image.open(root / "val" / "images" / GRAY) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(x[gray, 0].numpy(), np.asarray(img).astype(np.float32) / 255)
    assert test.info == dataset_info("tinyimagenet") == dataset_info("Tiny_ImageNet")
    assert test.info == DatasetInfo("tiny-imagenet", 200, (3, 64, 64), (0.4802, 0.4481, 0.3975),
                                    (0.2302, 0.2265, 0.2262), 8 / 255, ("train", "test"))


def test_tiny_imagenet_layouts_and_root_levels_agree(tmp_path):
    download = _tiny(tmp_path / "a")
    _tiny(tmp_path / "b", "folders")
    _tiny(tmp_path / "c", "folders", images_dir=False)
    ref = load_dataset("tiny-imagenet", "test", root=tmp_path / "a")
    for root in (download, tmp_path / "b", tmp_path / "b" / "tiny-imagenet-200", tmp_path / "c"):
        x, y = load_dataset("tiny_imagenet", "test", root=root)
        assert torch.equal(x, ref[0]) and torch.equal(y, ref[1])
    x_a, y_a = load_dataset("tinyimagenet", "train", root=tmp_path / "a")
    x_b, y_b = load_dataset("tiny-imagenet", "train", root=download)
    assert torch.equal(x_a, x_b) and y_a.tolist() == y_b.tolist() == [0, 0, 1, 1, 2, 2]


def test_tiny_imagenet_errors(tmp_path):
    with pytest.raises(DataError) as err:
        open_dataset("tiny-imagenet", "test", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "tiny-imagenet-200") in msg and "val_annotations.txt" in msg and "val/<wnid>/" in msg
    assert "train/<wnid>/images" in msg and "LANDSCAPE_DATA" in msg and "\n" not in msg
    root = _tiny(tmp_path)
    bad = _truncate(root / "val" / "images" / "val_2.JPEG")
    for workers in (0, 2):
        with pytest.raises(DataError) as err:
            _all(open_dataset("tiny-imagenet", "test", root=tmp_path), workers=workers)
        assert str(err.value).startswith(f"{bad}: truncated or corrupt image") and "\n" not in str(err.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn09\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations\.txt: line 1 names wnid 'n09'"):
        open_dataset("tiny-imagenet", "test", root=tmp_path)
    (root / "val" / "val_annotations.txt").write_text("val_77.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"images: 1 annotated images are missing, e.g\. val_77\.JPEG"):
        open_dataset("tiny-imagenet", "test", root=tmp_path)
    _save(root / "train" / "n01" / "images" / "n01_0.JPEG", _pixels(0, 32, 32))
    with pytest.raises(DataError, match=r"n01_0\.JPEG: image is 32x32 \(HxW\) but the dataset's images are 64x64"):
        load_dataset("tiny-imagenet", "train", root=tmp_path)


# ---------------------------------------------------------------------------------------------- imagefolder

def _folder(root: Path) -> dict[str, np.ndarray]:
    """Classes cat, ant, bee (labels by sorted name: ant 0, bee 1, cat 2), 8x8 lossless images."""
    files = {"cat/c1.png": _pixels(1, 8, 8), "cat/c0.PNG": _pixels(2, 8, 8), "ant/a0.bmp": _pixels(3, 8, 8),
             "ant/a1.Png": _pixels(4, 8, 8, gray=True), "bee/b0.png": _pixels(5, 8, 8),
             "bee/b1.png": _pixels(6, 8, 8), "ant/a2.png": _pixels(7, 8, 8), "cat/c2.png": _pixels(8, 8, 8)}
    for name, pixels in files.items():
        _save(root / name, pixels)
    return files


def test_imagefolder_labels_pixels_and_one_note_for_stray_files(tmp_path, capsys):
    files = _folder(tmp_path)
    (tmp_path / "README.txt").write_text("not an image")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_text("hidden: skipped silently")
    ds = open_dataset("imagefolder", "test", root=tmp_path)
    order = ["ant/a0.bmp", "ant/a1.Png", "ant/a2.png", "bee/b0.png", "bee/b1.png", "cat/c0.PNG", "cat/c1.png",
             "cat/c2.png"]
    assert ds.targets.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert ds.info == DatasetInfo("imagefolder", 3, (3, 8, 8), None, None, 8 / 255, ("train", "test"))
    with pytest.raises(ValueError, match="learns its classes and image size from its files"):
        dataset_info("imagefolder")
    x, y = _all(ds)
    np.testing.assert_array_equal(x.numpy(), np.stack([_chw(files[n]) for n in order]))
    assert x[1, 0, 3, 5].item() == x[1, 2, 3, 5].item() == pytest.approx(files["ant/a1.Png"][3, 5] / 255)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("landscape: note:")]
    assert len(notes) == 1 and "skipped 2 entries" in notes[0] and "README.txt" in notes[0]
    x_train, _ = load_dataset("imagefolder", "train", root=tmp_path)  # no train/ and test/: the same images
    assert torch.equal(x_train, x) and "landscape: note:" not in capsys.readouterr().err


def test_imagefolder_train_and_test_subfolders(tmp_path):
    train = _folder(tmp_path / "train")
    _save(tmp_path / "val" / "ant" / "v.png", _pixels(20, 8, 8))
    _save(tmp_path / "val" / "cat" / "w.png", _pixels(21, 8, 8))
    x, y = load_dataset("imagefolder", "train", root=tmp_path)
    assert x.shape == (8, 3, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    np.testing.assert_array_equal(x[3].numpy(), _chw(train["bee/b0.png"]))
    x, y = load_dataset("imagefolder", "test", root=tmp_path)  # val/ as the test split: its own 2 classes
    assert y.tolist() == [0, 1]
    np.testing.assert_array_equal(x.numpy(), np.stack([_chw(_pixels(20, 8, 8)), _chw(_pixels(21, 8, 8))]))


def test_imagefolder_resize_and_size_mismatch(tmp_path):
    _save(tmp_path / "a" / "0.png", _pixels(0, 8, 8))
    odd = _save(tmp_path / "b" / "1.png", _pixels(1, 6, 10))
    ds = open_dataset("imagefolder", root=tmp_path, size=4)
    assert ds.info.input_shape == (3, 4, 4)
    x, y = _all(ds)
    with Image.open(odd) as img:
        ref = np.asarray(img.convert("RGB").resize((4, 4), Image.Resampling.BILINEAR))
    assert x.shape == (2, 3, 4, 4) and y.tolist() == [0, 1]
    np.testing.assert_array_equal(x[1].numpy(), _chw(ref))
    assert torch.equal(_all(open_dataset("imagefolder", root=tmp_path, size="4"))[0], x)  # as typed on a CLI
    ds = open_dataset("imagefolder", root=tmp_path)
    assert ds.info.input_shape == (3, 8, 8)
    with pytest.raises(DataError, match=rf"{odd.name}: image is 6x10 \(HxW\) but the dataset's images are 8x8 .*"
                                        r"--data-arg size=N"):
        _all(ds)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        open_dataset("imagefolder", root=tmp_path, size=0)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match=r"folder not found; imagefolder expects <root>/<class>/"):
        open_dataset("imagefolder", root=tmp_path / "missing")
    _folder(tmp_path)
    with pytest.raises(ValueError, match=r"unknown --data-arg colour for dataset 'imagefolder' \(it takes: size\)"):
        open_dataset("imagefolder", root=tmp_path, colour=1)
    with pytest.raises(ValueError, match="split must be one of train, test"):
        open_dataset("imagefolder", "extra", root=tmp_path)
    bad = _truncate(tmp_path / "bee" / "b1.png")
    for workers in (0, 2):
        with pytest.raises(DataError) as err:
            list(batches(open_dataset("imagefolder", root=tmp_path), 3, workers=workers))
        assert str(err.value).startswith(f"{bad}: truncated or corrupt image (OSError: ") and "\n" not in str(err.value)
        assert multiprocessing.active_children() == []  # the workers were shut down with the error, not left to gc
    bad.write_bytes(b"hello")
    with pytest.raises(DataError, match=r"b1\.png: not an image Pillow can read"):
        _all(open_dataset("imagefolder", root=tmp_path))
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "readme.md").write_text("no images")
    with pytest.raises(DataError, match=rf"{tmp_path / 'dog'}: empty class folder"):
        open_dataset("imagefolder", root=tmp_path)


def test_subsets_and_workers_agree(tmp_path):
    _folder(tmp_path / "f")
    full = open_dataset("imagefolder", root=tmp_path / "f")
    x_all, y_all = _all(full)
    x, y = load_dataset("imagefolder", "test", root=tmp_path / "f", n=6, seed=3)
    idx = stratified_indices(full.targets, 6, seed=3)
    assert np.bincount(y.numpy()).tolist() == [2, 2, 2]
    assert torch.equal(x, x_all[idx]) and torch.equal(y, y_all[idx])
    _tiny(tmp_path / "t")
    for ds in (full, select(full, 5, seed=1), open_dataset("tiny-imagenet", "test", root=tmp_path / "t")):
        one = list(batches(ds, 3, workers=0))
        two = list(batches(ds, 3, workers=2))
        assert [len(b[1]) for b in one] == [3] * (len(ds) // 3) + ([len(ds) % 3] if len(ds) % 3 else [])
        assert len(one) == len(two) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                            for a, b in zip(one, two))


# ---------------------------------------------------------------------------------------------- npz

def test_npz_layouts_nhwc_nchw_and_classes(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (7, 5, 6, 3), dtype=np.uint8)
    y_train, y_test = np.array([0, 1, 2, 4, 1, 0, 2]), np.array([[1], [0]])
    np.savez(tmp_path / "nhwc.npz", x_train=nhwc, y_train=y_train, x_test=nhwc[:2], y_test=y_test)
    np.savez(tmp_path / "nchw.npz", x_train=nhwc.transpose(0, 3, 1, 2), y_train=y_train,
             x_test=nhwc[:2].transpose(0, 3, 1, 2), y_test=y_test)
    for split, labels in (("train", y_train.tolist()), ("test", [1, 0])):
        a = load_dataset("npz", split, root=tmp_path / "nhwc.npz")
        b = load_dataset("npz", split, root=tmp_path / "nchw.npz")
        assert torch.equal(a[0], b[0]) and a[1].tolist() == b[1].tolist() == labels
    x, _ = load_dataset("npz", "train", root=tmp_path / "nhwc.npz")
    np.testing.assert_array_equal(x.numpy(), nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert x[4, 2, 3, 1].item() == pytest.approx(nhwc[4, 3, 1, 2] / 255)
    ds = open_dataset("npz", "test", root=tmp_path / "nhwc.npz")
    assert ds.info == DatasetInfo("npz", 5, (3, 5, 6), None, None, 8 / 255, ("train", "test"))  # 4 + 1, all splits
    assert open_dataset("npz", "test", root=tmp_path / "nhwc.npz", num_classes=10).info.num_classes == 10
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\), got range \[0, 4\]"):
        open_dataset("npz", "train", root=tmp_path / "nhwc.npz", num_classes=3)
    single = tmp_path / "one"
    single.mkdir()
    floats = rng.random((4, 1, 3, 3))  # float64 in [0, 1], grayscale NCHW
    np.savez(single / "mine.npz", x=floats, y=np.array([1, 0, 1, 1]))
    for split in ("train", "test"):  # one set of arrays serves both splits; the folder holds one .npz
        x, y = load_dataset("npz", split, root=single)
        assert torch.equal(x, torch.from_numpy(floats.astype(np.float32))) and y.tolist() == [1, 0, 1, 1]


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "objects.npz", x=np.array([None, 1], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"objects\.npz: array x holds Python objects"):
        open_dataset("npz", root=tmp_path / "objects.npz")
    np.savez(tmp_path / "second.npz", x=np.zeros((2, 3, 4, 4), np.uint8), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"holds 2 \.npz files \(objects\.npz, second\.npz\)"):
        open_dataset("npz", root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: holds no \.npz file"):
        open_dataset("npz", root=tmp_path / "empty")
    with pytest.raises(DataError, match=r"nothing\.npz: not found"):
        open_dataset("npz", root=tmp_path / "nothing.npz")
    np.savez(tmp_path / "keys.npz", images=np.zeros((2, 3, 4, 4), np.uint8), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"keys\.npz: needs arrays x and y, or x_test and y_test, found: images, y"):
        open_dataset("npz", root=tmp_path / "keys.npz")
    np.savez(tmp_path / "range.npz", x=np.full((2, 3, 4, 4), 1.5), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"range\.npz: float images must lie in \[0, 1\]"):
        open_dataset("npz", root=tmp_path / "range.npz")
    with pytest.raises(ValueError, match="unknown --data-arg size for dataset 'npz'"):
        open_dataset("npz", root=tmp_path / "second.npz", size=3)
