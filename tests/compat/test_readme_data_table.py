"""Every row of the README's "Your data" table runs as printed, on a generated miniature of its layout.

For each row the test writes, in a fresh working folder, the files the command names (in the layout the data's
own distribution or code uses, written here from the layout description, not with landscape's readers) and a
``small_cnn`` checkpoint with an architecture record (as ``landscape train`` writes, so ``--arch`` may be left
out). Then:

* ``measure``: the command as printed, with ``--n all --measures grad --steps 1`` appended; the table's labels
  must equal the miniature's ground-truth labels in dataset order, and its ``loss_clean`` the model's own
  cross-entropy on the ground-truth pixels;
* ``trajectory``: the same data options over the checkpoint's folder, with the serial, process and Ray
  executors; the per-sample labels again equal the ground truth.
"""
from __future__ import annotations

import pickle
import shlex
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from landscape.checkpoints import load as load_module
from landscape.checkpoints import save_checkpoint
from landscape.cli import main
from landscape.models import create_model

from .readme import table_rows

SMALL = ["--n", "all", "--measures", "grad", "--steps", "1", "--batch-size", "8", "--quiet"]
PIL = pytest.importorskip("PIL.Image")


ROWS = table_rows("Your data")


def _opt(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


# ------------------------------------------------------------------------------------------- miniatures
# Each builder writes its layout under ``root`` (the path the command names) and returns the test split's
# ground truth ``(x uint8 (N, C, H, W), y)`` in the order the dataset lists it.

def _pixels(rng, n: int, h: int, c: int = 3) -> np.ndarray:
    return rng.integers(0, 256, (n, c, h, h), dtype=np.uint8)


def _digits(root: Path, rng):
    from sklearn.datasets import load_digits

    d = load_digits()
    test = []
    seen: dict[int, int] = {}
    for i, c in enumerate(d.target):  # the documented split: per class, in order, train, test, train, ...
        if seen.get(c, 0) % 2 == 1:
            test.append(i)
        seen[c] = seen.get(c, 0) + 1
    x = (d.data[test] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return x, d.target[test]


def _cifar10(root: Path, rng):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = _pixels(rng, 6, 32)
        y = [int(v) for v in rng.integers(0, 10, 6)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x.reshape(6, -1), b"labels": y}, f)
        out = (x, np.array(y))
    return out


def _svhn(root: Path, rng):
    from scipy.io import savemat

    root.mkdir(parents=True)
    out = None
    for name in ("train_32x32.mat", "test_32x32.mat"):
        x = _pixels(rng, 7, 32)
        digit = np.arange(7) % 10
        savemat(root / name, {"X": x.transpose(2, 3, 1, 0), "y": np.where(digit == 0, 10, digit)[:, None]})
        out = (x, digit)
    return out


_WNIDS = ["n09999999", "n01443537", "n02000000"]  # listed unsorted, as a file may be


def _jpeg(path: Path, pixels: np.ndarray, gray: bool = False) -> np.ndarray:
    """Write a JPEG and return what PIL decodes from it, (3, H, W) uint8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = PIL.fromarray(pixels[0] if gray else pixels.transpose(1, 2, 0), "L" if gray else "RGB")
    img.save(path, quality=95)
    back = np.asarray(PIL.open(path).convert("RGB"))
    return back.transpose(2, 0, 1).copy()


def _tiny(root: Path, rng, *, reorganised: bool):
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(_WNIDS) + "\n")
    for w in _WNIDS:
        for i in range(2):
            _jpeg(base / "train" / w / "images" / f"{w}_{i}.JPEG", _pixels(rng, 1, 64)[0])
    label = {w: i for i, w in enumerate(sorted(_WNIDS))}
    xs, ys, lines = [], [], []
    for i, w in enumerate(_WNIDS * 2):
        name = f"val_{i}.JPEG"
        gray = i == 0  # Tiny-ImageNet holds some grayscale JPEGs
        where = base / "val" / (w if reorganised else "images") / name
        xs.append((i, w, _jpeg(where, _pixels(rng, 1, 64, 1 if gray else 3)[0], gray=gray)))
        lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    if not reorganised:
        (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    # both layouts list the images as ImageFolder lists the re-organised one: by class, then file name
    order = sorted(xs, key=lambda t: (label[t[1]], f"val_{t[0]}.JPEG"))
    ys = [label[w] for _, w, _ in order]
    return np.stack([p for _, _, p in order]), np.array(ys)


def _imagefolder(root: Path, rng):
    classes = ["zebra", "apple", "mango"]  # labels follow the sorted names: apple 0, mango 1, zebra 2
    xs, ys = [], []
    for name in sorted(classes):
        for i, size in enumerate((32, 40)):
            pixels = _pixels(rng, 1, size)[0]
            path = root / name / f"img{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            PIL.fromarray(pixels.transpose(1, 2, 0)).save(path)
            img = PIL.open(path).convert("RGB")
            if size != 32:
                img = img.resize((32, 32), PIL.BILINEAR)
            xs.append(np.asarray(img).transpose(2, 0, 1))
            ys.append(sorted(classes).index(name))
    (root / "README.txt").write_text("not an image")
    return np.stack(xs), np.array(ys)


def _npz(root: Path, rng):
    x = _pixels(rng, 9, 16)
    y = np.arange(9) % 4
    np.savez(root, x=x.transpose(0, 2, 3, 1), y=y)  # NHWC, as most scripts hold images
    return x, y


def _function(root: Path, rng):
    root.write_text(textwrap.dedent("""
        import torch

        def make(split, count=4):
            g = torch.Generator().manual_seed(0 if split == "test" else 1)
            x = torch.rand(count, 3, 12, 12, generator=g)
            return x, torch.arange(count) % 5
    """))
    return None, None  # the truth depends on --data-arg count: _fn_truth


def _fn_truth(count: int):
    g = torch.Generator().manual_seed(0)
    return torch.rand(count, 3, 12, 12, generator=g).numpy(), (np.arange(count) % 5)


BUILDERS = {
    "scikit-learn's bundled digits": ("digits", _digits),
    "CIFAR-10 (python version)": ("cifar10", _cifar10),
    "SVHN (the paper's, as distributed)": ("svhn", _svhn),
    "Tiny-ImageNet, as downloaded": ("tiny", lambda r, g: _tiny(r.parent, g, reorganised=False)),
    "Tiny-ImageNet, re-organised by the AdvLC code": ("tiny", lambda r, g: _tiny(r, g, reorganised=True)),
    "your image folders": ("imagefolder", _imagefolder),
    "your arrays": ("npz", _npz),
    "your own loading code": ("function", _function),
}


def test_the_table_has_a_row_per_layout():
    assert set(ROWS) == set(BUILDERS), f"README rows {sorted(ROWS)}"


def _setup(label: str, tmp_path: Path, monkeypatch) -> tuple[list[str], np.ndarray, np.ndarray, Path]:
    """Write the row's miniature and checkpoint; returns (argv, x truth in [0,1], y truth, checkpoint)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(load_module, "_NOTES_SHOWN", set())
    argv = shlex.split(ROWS[label])
    assert argv[:2] == ["landscape", "measure"]
    kind, build = BUILDERS[label]
    rng = np.random.default_rng(len(label))
    data = _opt(argv, "--data")
    target = Path(_opt(argv, "--data-root") or (data.split(":")[0] if ":" in data else "."))
    x, y = build(target, rng)
    if kind == "function":
        x, y = _fn_truth(int(_opt(argv, "--data-arg").split("=")[1]))
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
    c, h = x.shape[1], x.shape[-1]
    classes = {"tiny": 200, "cifar10": 10, "svhn": 10, "digits": 10}.get(kind, int(y.max()) + 1)
    torch.manual_seed(0)
    model = create_model("small_cnn", in_channels=c, num_classes=classes, input_size=h, width=4)
    ckpt = Path(argv[2])
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, model, epoch=100)
    return argv, x, y, ckpt


@pytest.mark.parametrize("label", list(BUILDERS))
def test_row_measures_the_ground_truth(label, tmp_path, monkeypatch, capsys):
    argv, x, y, ckpt = _setup(label, tmp_path, monkeypatch)
    rc = main(argv[1:] + SMALL)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    df = pd.read_csv(_opt(argv, "--out")).sort_values("sample")
    np.testing.assert_array_equal(df["label"].to_numpy(), y)
    from landscape import load_model

    model = load_model(ckpt, None)
    with torch.no_grad():
        want = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y).long(), reduction="none")
    np.testing.assert_allclose(df["loss_clean"].to_numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    default_eps = 0.1 if "digits" in label else 8 / 255
    np.testing.assert_allclose(df["eps"].to_numpy(), default_eps)
    assert "eps " in captured.out and "the default of" in captured.out


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["serial", "process", "ray"])
def test_rows_through_every_executor(executor, tmp_path, monkeypatch, capsys, request):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    for i, label in enumerate(BUILDERS):
        work = tmp_path / str(i)
        work.mkdir()
        argv, x, y, ckpt = _setup(label, work, monkeypatch)
        data_opts = [a for j, a in enumerate(argv[3:], 3)
                     if a.startswith("--data") or argv[j - 1].startswith("--data")]
        out = work / "analysis"
        rc = main(["trajectory", str(ckpt.parent.resolve()), *data_opts, "--split", "test", "--executor", executor,
                   "--workers", "2", "--out", str(out), *SMALL])
        err = capsys.readouterr().err
        assert rc == 0, f"{label}: {err}"
        samples = pd.read_parquet(out / "samples.parquet").sort_values("sample")
        np.testing.assert_array_equal(samples["label"].to_numpy(), y, err_msg=label)
