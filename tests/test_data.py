"""Datasets: digits values/split/subsets against direct computation, local CIFAR layouts, clear errors."""
from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from landscape import LandscapeError
from landscape.datasets import (
    DataError, DatasetInfo, add_label_noise, data_root, dataset_info, list_datasets, load_dataset,
    stratified_indices,
)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data / 16.0, d.target


def _alternating_split(y: np.ndarray) -> tuple[list[int], list[int]]:
    """The documented rule, written independently: per class, in dataset order, train, test, train, ..."""
    train, test, seen = [], [], {}
    for i, c in enumerate(y):
        (train if seen.get(c, 0) % 2 == 0 else test).append(i)
        seen[c] = seen.get(c, 0) + 1
    return train, test


# ---------------------------------------------------------------------------------------------- registry

def test_list_and_info():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "imagefolder", "npz", "svhn", "tiny-imagenet"]
    assert dataset_info("cifar10") == DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465),
                                                  (0.2471, 0.2435, 0.2616))
    assert dataset_info("CIFAR100") == DatasetInfo("cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409),
                                                   (0.2673, 0.2564, 0.2762))
    info = dataset_info("digits")
    assert (info.num_classes, info.input_shape) == (10, (1, 8, 8))
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'.*did you mean cifar10"):
        dataset_info("cifar")
    with pytest.raises(TypeError):
        dataset_info(10)


def test_digits_mean_std_are_training_split_statistics(digits):
    x, y = digits
    train, _ = _alternating_split(y)
    info = dataset_info("digits")
    assert info.mean[0] == pytest.approx(x[train].mean(), abs=1e-4)
    assert info.std[0] == pytest.approx(x[train].std(), abs=1e-4)


# ---------------------------------------------------------------------------------------------- digits

def test_digits_values_shapes_and_split(digits):
    x_ref, y_ref = digits
    train_idx, test_idx = _alternating_split(y_ref)
    for split, idx in (("train", train_idx), ("test", test_idx)):
        x, y = load_dataset("digits", split)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(idx), 1, 8, 8) and y.shape == (len(idx),)
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        np.testing.assert_array_equal(x.reshape(len(idx), 64).numpy(), x_ref[idx].astype(np.float32))
        np.testing.assert_array_equal(y.numpy(), y_ref[idx])
    assert (len(train_idx), len(test_idx)) == (901, 896)
    assert sorted(train_idx + test_idx) == list(range(1797))


def test_digits_split_is_stratified_and_independent_of_seed(digits):
    _, y_ref = digits
    counts = np.bincount(y_ref)
    y_train = load_dataset("digits", "train", seed=0)[1]
    y_test = load_dataset("digits", "test", seed=123)[1]
    np.testing.assert_array_equal(np.bincount(y_train.numpy()), (counts + 1) // 2)
    np.testing.assert_array_equal(np.bincount(y_test.numpy()), counts // 2)
    assert torch.equal(load_dataset("digits", "test", seed=7)[0], load_dataset("digits", "test", seed=0)[0])


def test_digits_subset_is_stratified_deterministic_and_seeded():
    x_all, y_all = load_dataset("digits", "test")
    x, y = load_dataset("digits", "test", n=100, seed=3)
    assert x.shape == (100, 1, 8, 8)
    assert np.bincount(y.numpy()).tolist() == [10] * 10  # 896 test samples, 85-92 per class -> 10 each
    again = load_dataset("digits", "test", n=100, seed=3)
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    assert not torch.equal(load_dataset("digits", "test", n=100, seed=4)[0], x)
    keep = stratified_indices(y_all.numpy(), 100, 3)
    assert torch.equal(x_all[keep], x) and torch.equal(y_all[keep], y)


def test_stratified_indices_hand_values_and_rounding():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    idx = stratified_indices(y, 5, seed=0)
    # quotas 3, 1.5, 0.5 -> floors 3, 1, 0; the one left goes to the tie's smaller label (class 1)
    assert np.bincount(y[idx], minlength=3).tolist() == [3, 2, 0]
    assert list(idx) == sorted(idx) and len(set(idx)) == 5
    assert list(stratified_indices(y, 10, seed=0)) == list(range(10))
    y = np.repeat(np.arange(7), [50, 31, 7, 99, 12, 1, 40])
    for n in (1, 13, 57, 100, 239):
        counts = np.bincount(y[stratified_indices(y, n, seed=n)], minlength=7)
        assert counts.sum() == n
        assert np.all(np.abs(counts - n * np.bincount(y) / len(y)) < 1)


def test_subset_and_split_validation():
    with pytest.raises(ValueError, match=r"n must be between 1 and 896"):
        load_dataset("digits", "test", n=1000)
    with pytest.raises(ValueError, match=r"between 1 and"):
        load_dataset("digits", "test", n=0)
    with pytest.raises(TypeError, match="n must be an int"):
        load_dataset("digits", "test", n=True)
    with pytest.raises(ValueError, match=r"split must be one of train, test, got 'val'"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


# ---------------------------------------------------------------------------------------------- label noise

def test_label_noise_flips_exactly_and_never_to_the_original():
    y = torch.arange(30_000) % 10
    y_before = y.clone()
    noisy = add_label_noise(y, 0.4, 10, seed=1)
    assert torch.equal(y, y_before)  # input untouched
    flipped = noisy != y
    assert int(flipped.sum()) == 12_000
    assert noisy.dtype == torch.int64 and int(noisy.min()) >= 0 and int(noisy.max()) <= 9
    # symmetric: a flipped label is uniform over the 9 other classes
    offsets = ((noisy[flipped] - y[flipped]) % 10).numpy()
    assert offsets.min() >= 1
    freq = np.bincount(offsets, minlength=10)[1:] / flipped.sum().item()
    assert np.abs(freq - 1 / 9).max() < 0.01
    # and the flipped samples are spread over every class
    assert np.bincount(y[flipped].numpy(), minlength=10).min() > 1000


def test_label_noise_determinism_and_edges():
    y = torch.tensor([0, 1, 2, 3] * 25)
    assert torch.equal(add_label_noise(y, 0.3, 4, seed=5), add_label_noise(y, 0.3, 4, seed=5))
    assert not torch.equal(add_label_noise(y, 0.3, 4, seed=5), add_label_noise(y, 0.3, 4, seed=6))
    assert torch.equal(add_label_noise(y, 0.0, 4, seed=0), y)
    assert bool((add_label_noise(y, 1.0, 4, seed=0) != y).all())
    two = add_label_noise(torch.tensor([0, 1, 0, 1]), 1.0, 2, seed=0)
    assert two.tolist() == [1, 0, 1, 0]  # with two classes a flip is determined


@pytest.mark.parametrize("args, err, match", [
    ((torch.tensor([0, 1]), 1.5, 2), ValueError, r"p must be a fraction in \[0, 1\], got 1.5"),
    ((torch.tensor([0, 1]), -0.1, 2), ValueError, "p must be"),
    ((torch.tensor([0, 5]), 0.5, 3), ValueError, r"labels must lie in \[0, 3\)"),
    ((torch.tensor([0, 1]), 0.5, 1), ValueError, "num_classes must be >= 2"),
    ((torch.tensor([0.0, 1.0]), 0.5, 2), TypeError, "labels y must be integers"),
    ((torch.tensor([0, 1]), 0.5, 2.0), TypeError, "num_classes must be an int"),
])
def test_label_noise_validation(args, err, match):
    with pytest.raises(err, match=match):
        add_label_noise(*args, seed=0)


# ---------------------------------------------------------------------------------------------- CIFAR

def _batch(rng, n: int, num_classes: int, label_key: str, bytes_keys: bool = False) -> dict:
    d = {"batch_label": "fake", label_key: [int(v) for v in rng.integers(0, num_classes, n)],
         "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [b"img.png"] * n}
    return {k.encode(): v for k, v in d.items()} if bytes_keys else d


def _fake_cifar10(folder: Path, n: int = 6, bytes_keys: bool = False, files=None) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in files or [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _batch(rng, n, 10, "labels", bytes_keys)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    return batches


def _get(batch: dict, key: str):
    return batch[key] if key in batch else batch[key.encode()]


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_pickle_folder(tmp_path, bytes_keys):
    batches = _fake_cifar10(tmp_path / "cifar-10-batches-py", bytes_keys=bytes_keys)
    x, y = load_dataset("cifar10", "train", root=tmp_path)
    data = np.concatenate([_get(batches[f"data_batch_{i}"], "data") for i in range(1, 6)])
    labels = sum((_get(batches[f"data_batch_{i}"], "labels") for i in range(1, 6)), [])
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.float32
    np.testing.assert_array_equal(x.numpy(), data.reshape(30, 3, 32, 32).astype(np.float32) / 255)
    assert y.tolist() == labels
    # a red-channel pixel: data row layout is 1024 R, 1024 G, 1024 B values of a 32x32 image
    assert x[7, 0, 2, 5].item() == pytest.approx(data[7, 2 * 32 + 5] / 255)
    assert x[7, 2, 31, 31].item() == pytest.approx(data[7, 3071] / 255)
    x_t, y_t = load_dataset("cifar10", "test", root=tmp_path)
    assert y_t.tolist() == _get(batches["test_batch"], "labels")


def test_cifar_root_from_environment_and_direct_folder(tmp_path, monkeypatch):
    _fake_cifar10(tmp_path / "cifar-10-batches-py")
    monkeypatch.setenv("LANDSCAPE_DATA", str(tmp_path))
    assert data_root() == tmp_path
    x_env, _ = load_dataset("cifar10", "test")
    x_dir, _ = load_dataset("cifar10", "test", root=tmp_path / "cifar-10-batches-py")  # the folder itself
    assert torch.equal(x_env, x_dir) and x_env.shape == (6, 3, 32, 32)
    monkeypatch.delenv("LANDSCAPE_DATA")
    assert data_root() == Path("~/.cache/landscape/data").expanduser()


def test_cifar_test_split_alone_is_enough_for_test(tmp_path):
    _fake_cifar10(tmp_path / "cifar-10-batches-py", files=["test_batch"])
    assert load_dataset("cifar10", "test", root=tmp_path)[0].shape == (6, 3, 32, 32)
    with pytest.raises(DataError, match=r"cifar-10-batches-py: cifar10 train files missing: data_batch_1, "):
        load_dataset("cifar10", "train", root=tmp_path)


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batch = _batch(rng, 8, 100, "fine_labels")
    batch["fine_labels"][0] = 99
    batch["coarse_labels"] = [0] * 8
    (folder / "test").write_bytes(pickle.dumps(batch, protocol=2))
    x, y = load_dataset("cifar100", "test", root=tmp_path)
    assert y.tolist() == batch["fine_labels"] and x.shape == (8, 3, 32, 32)


def test_cifar_npz_nhwc_uint8_and_nchw_float(tmp_path):
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    x_test = rng.random((5, 3, 32, 32)).astype(np.float32)
    y_train, y_test = np.arange(12) % 10, np.array([[1], [2], [3], [4], [5]])
    np.savez(tmp_path / "cifar10.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    x, y = load_dataset("cifar10", "train", root=tmp_path)
    assert x.shape == (12, 3, 32, 32) and y.tolist() == y_train.tolist()
    assert x[3, 1, 10, 20].item() == pytest.approx(x_train[3, 10, 20, 1] / 255)
    np.testing.assert_array_equal(x.numpy(), x_train.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    x, y = load_dataset("cifar10", "test", root=tmp_path / "cifar10.npz")  # root may be the file
    assert torch.equal(x, torch.from_numpy(x_test)) and y.tolist() == [1, 2, 3, 4, 5]
    x, y = load_dataset("cifar10", "train", root=tmp_path, n=5, seed=0)
    assert x.shape == (5, 3, 32, 32) and len(set(y.tolist())) == 5


def test_missing_cifar_says_where_it_looked(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and str(tmp_path / "cifar10.npz") in msg
    assert "data_batch_1" in msg and "x_train" in msg and "LANDSCAPE_DATA" in msg and "\n" not in msg
    with pytest.raises(DataError, match=r"missing\.npz"):
        load_dataset("cifar100", root=tmp_path / "missing.npz")
    assert issubclass(DataError, LandscapeError)


@pytest.mark.parametrize("arrays, match", [
    (dict(x_test=np.full((2, 3, 32, 32), np.nan, np.float32), y_test=np.zeros(2, int)), "2 NaN/Inf|6144 NaN/Inf"),
    (dict(x_test=np.full((2, 3, 32, 32), 2.0, np.float32), y_test=np.zeros(2, int)), r"must lie in \[0, 1\]"),
    (dict(x_test=np.zeros((2, 3, 32, 32), np.uint8), y_test=np.array([0, 10])), r"labels must lie in \[0, 10\)"),
    (dict(x_test=np.zeros((2, 3, 32, 32), np.uint8), y_test=np.array([0.0, 1.0])), "labels must be integers"),
    (dict(x_test=np.zeros((2, 3, 28, 28), np.uint8), y_test=np.zeros(2, int)), r"shape \(N, 3, 32, 32\)"),
    (dict(x_test=np.zeros((2, 3, 32, 32), np.int32), y_test=np.zeros(2, int)), "uint8 .* or float"),
    (dict(x_test=np.zeros((2, 3, 32, 32), np.uint8), y_test=np.zeros(3, int)), "2 images but labels"),
    (dict(x_train=np.zeros((2, 3, 32, 32), np.uint8), y_train=np.zeros(2, int)), "needs arrays x_test and y_test"),
    (dict(x_test=np.array([None, 1], dtype=object), y_test=np.zeros(2, int)), "holds Python objects"),
])
def test_bad_npz_contents_are_data_errors_naming_the_file(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=rf"bad\.npz: .*({match})"):
        load_dataset("cifar10", "test", root=path)


def test_npz_declaring_a_huge_array_is_refused(tmp_path):
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000, 32, 32, 3), }"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 100
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x_test.npy", npy)
        zf.writestr("y_test.npy", b"")
    with pytest.raises(DataError, match=r"bomb\.npz: array x_test declares shape \(1000000000, 32, 32, 3\)"):
        load_dataset("cifar10", "test", root=path)


def test_bad_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _fake_cifar10(folder, files=["test_batch"])
    good = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"test_batch: truncated or corrupt pickle"):
        load_dataset("cifar10", root=tmp_path)
    batch = _batch(np.random.default_rng(0), 4, 10, "labels")
    batch["labels"][1] = 12
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"test_batch: labels must lie in \[0, 10\), got range \[\d+, 12\]"):
        load_dataset("cifar10", root=tmp_path)
    batch = _batch(np.random.default_rng(0), 4, 10, "labels")
    batch["data"] = batch["data"][:, :100]
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"'data' must be a uint8 array of shape \(N, 3072\)"):
        load_dataset("cifar10", root=tmp_path)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_pickle_that_runs_code_is_refused(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "MARKER"
    batch = _batch(np.random.default_rng(0), 2, 10, "labels")
    batch["filenames"] = _Payload(marker)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    with pytest.raises(DataError, match=r"test_batch: refusing to unpickle posix\.system"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()
    pickle.loads((folder / "test_batch").read_bytes())  # the payload is live: the refusal was not vacuous
    assert marker.exists()
