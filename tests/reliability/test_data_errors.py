"""Bad data through the CLI: exit 2 and one line on stderr naming the thing (file, folder, function, option,
counts), through ``measure``, ``slice`` and ``trajectory``; a trajectory that meets bad data keeps what it had
already computed."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from landscape import create_model
from landscape.checkpoints import save_checkpoint

from .test_cli_errors import assert_user_error, run_main

FAST = ["--quiet", "--steps", "1", "--measures", "grad"]


def _png(path, rng, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    root = tmp_path_factory.mktemp("data_errors")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    files = {"root": root}
    files["ckpt"] = save_checkpoint(root / "run" / "model_e1.pt", create_model("mlp", input_shape=(3, 8, 8),
                                                                                  hidden=(8,), num_classes=10),
                                    epoch=1)
    good = root / "good"
    for c in ("a", "b"):
        for i in range(3):
            _png(good / c / f"{i}.png", rng)
    files["good"] = good
    trunc = root / "truncated"
    for c in ("a", "b"):
        for i in range(3):
            _png(trunc / c / f"{i}.png", rng)
    data = (trunc / "b" / "1.png").read_bytes()
    (trunc / "b" / "1.png").write_bytes(data[: len(data) // 2])
    files["truncated"] = trunc
    empty = root / "empty_class"
    _png(empty / "a" / "0.png", rng)
    (empty / "b").mkdir()
    files["empty_class"] = empty
    files["many_labels"] = root / "labels.npz"
    np.savez(files["many_labels"], x=rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8), y=np.arange(12))
    files["raises"] = root / "my_data.py"
    files["raises"].write_text(textwrap.dedent("""
        def make(split):
            raise RuntimeError("the bucket is not mounted")
    """))
    return files


def _measure(f, *opts):
    return ["measure", f["ckpt"], *opts, "--out", f["root"] / "out.csv", *FAST]


CASES = {
    "missing root": (lambda f: _measure(f, "--data", "tiny-imagenet", "--data-root", f["root"] / "nowhere"),
                     lambda f: ["nowhere", "wnids.txt"]),
    "truncated image": (lambda f: _measure(f, "--data", "imagefolder", "--data-root", f["truncated"], "--n", "all"),
                        lambda f: ["1.png"]),
    "truncated image, decoded by workers": (
        lambda f: _measure(f, "--data", "imagefolder", "--data-root", f["truncated"], "--n", "all",
                           "--data-workers", "2"), lambda f: ["1.png"]),
    "empty class folder": (lambda f: _measure(f, "--data", "imagefolder", "--data-root", f["empty_class"]),
                           lambda f: ["empty_class/b", "empty"]),
    "n beyond the dataset": (lambda f: _measure(f, "--data", "npz", "--data-root", f["many_labels"]),
                             lambda f: ["between 1 and 12", "got 500", "--n all"]),
    "labels beyond the model's head": (lambda f: _measure(f, "--data", "npz", "--data-root", f["many_labels"],
                                                          "--n", "all"),
                                       lambda f: ["12 classes", "10 classes"]),
    "unknown --data-arg": (lambda f: _measure(f, "--data", "imagefolder", "--data-root", f["good"],
                                              "--data-arg", "colour=1"),
                           lambda f: ["--data-arg colour", "size"]),
    "user function raises": (lambda f: _measure(f, "--data", f"{f['raises']}:make"),
                             lambda f: ["my_data.py:make", "RuntimeError", "the bucket is not mounted"]),
    "unknown dataset": (lambda f: _measure(f, "--data", "tinyimagenett"), lambda f: ["did you mean"]),
    "slice: truncated image": (
        lambda f: ["slice", f["ckpt"], "--data", "imagefolder", "--data-root", f["truncated"], "--index", "0..5",
                   "--out", f["root"] / "slices", "--grid", "3", "--dirs", "random", "--quiet"],
        lambda f: ["1.png"]),
    "trajectory: missing root": (
        lambda f: ["trajectory", f["ckpt"].parent, "--data", "svhn", "--data-root", f["root"] / "nowhere",
                   "--out", f["root"] / "traj", *FAST], lambda f: ["_32x32.mat", "nowhere"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_one_line_and_exit_2(case, f):
    argv, words = CASES[case]
    code, _, err = run_main(argv(f))
    assert_user_error(code, err, *words(f))


def test_good_tree_measures(f):
    """The control: the same options on an intact tree succeed and echo the dataset's eps."""
    code, out, err = run_main(_measure(f, "--data", "imagefolder", "--data-root", f["good"], "--n", "all"))
    assert code == 0, err
    assert "eps 0.0313725 = 8/255 (the default of imagefolder" in out
