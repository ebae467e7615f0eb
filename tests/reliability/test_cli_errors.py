"""Bad input through the CLI: exit code 2 and one line on stderr naming the problem, never a traceback.

The full matrix of user errors runs through ``landscape.cli.main`` in this process (the code path of the
console script, minus the ~2 s torch import per case); an exception escaping ``main`` fails the test, since
the real process would print a traceback. A representative subset also runs as real subprocesses through
``python -m landscape.cli``, checking the exit status, the single stderr line and ``--debug``.
"""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape import create_model
from landscape.checkpoints import save_checkpoint

MLP = ["--arch", "mlp", "--arch-arg", "hidden=(16,)"]
FAST = ["--quiet", "--steps", "1"]


# ------------------------------------------------------------------------------------------------ fixtures


def _save_state(path: Path, model: torch.nn.Module) -> Path:
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints and data files shared by the cases (built once)."""
    root = tmp_path_factory.mktemp("cli_errors")
    torch.manual_seed(0)
    f: dict[str, Path] = {"root": root}
    runs = root / "run"
    runs.mkdir()
    mlp = create_model("mlp", hidden=(16,))
    f["ckpt"] = _save_state(runs / "model_e1.pt", mlp)
    f["run"] = runs
    f["official"] = save_checkpoint(root / "official_end.pth.tar", mlp, epoch=3)
    f["mlp4"] = _save_state(root / "mlp_4x4.pt", create_model("mlp", input_shape=(1, 4, 4), hidden=(16,)))
    f["cnn4"] = _save_state(root / "cnn_4x4.pt", create_model("small_cnn", input_size=4, width=4))
    cifar = root / "cifar_run"
    cifar.mkdir()
    f["cifar_ckpt"] = _save_state(cifar / "e1.pt", create_model("mlp", input_shape=(3, 32, 32), hidden=(16,)))
    f["cifar_run"] = cifar
    empty = root / "no_checkpoints"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a checkpoint\n")
    (empty / "metrics.csv").write_text("epoch,acc\n1,0.5\n")
    f["empty_dir"] = empty

    rng = np.random.default_rng(0)
    x = rng.random((6, 32, 32, 3), dtype=np.float32)
    y = np.arange(6) % 10
    bad = x.copy()
    bad[0, 0, 0, 0], bad[1, 1, 1, 1] = np.nan, np.inf
    f["nan_npz"] = root / "nan" / "cifar10.npz"
    f["nan_npz"].parent.mkdir()
    np.savez(f["nan_npz"], x_train=bad, y_train=y, x_test=bad, y_test=y)
    f["empty_npz"] = root / "empty" / "cifar10.npz"
    f["empty_npz"].parent.mkdir()
    none = np.zeros((0, 32, 32, 3), np.uint8)
    np.savez(f["empty_npz"], x_train=none, y_train=np.zeros(0, np.int64), x_test=none, y_test=np.zeros(0, np.int64))

    f["a_file"] = root / "a_file.txt"
    f["a_file"].write_text("I am a file, not a folder\n")
    f["not_parquet"] = root / "trajectory.parquet"
    f["not_parquet"].write_text("this is not parquet\n")
    f["out"] = root / "out"
    f["out"].mkdir()
    return f


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """Run ``landscape.cli.main(argv)`` capturing stdout/stderr; returns (exit code, stdout, stderr)."""
    from landscape.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors
            code = exc.code
        except Exception as exc:  # the console script would print a traceback here
            pytest.fail(f"landscape {' '.join(map(str, argv))}: uncaught {type(exc).__name__}: {exc} "
                        f"(the CLI would print a traceback)")
    return int(code), out.getvalue(), err.getvalue()


def assert_user_error(code: int, stderr: str, *words: str) -> str:
    """Exit 2, exactly one non-empty stderr line containing every word, no traceback; returns the line."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, f"exit code {code}, stderr:\n{stderr}"
    assert "Traceback" not in stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith("landscape"), line
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"
    return line


# ------------------------------------------------------------------------------------------------ cases


def _slice(f, ckpt, *extra, out=None):
    return ["slice", ckpt, *MLP, "--n", "20", "--index", "0..1", "--grid", "3", "--dirs", "random",
            "--out", out or f["out"] / "slice", *FAST, *extra]


def _traj(f, source, *extra, model=MLP, out=None):
    return ["trajectory", source, *model, "--n", "10", "--out", out or f["out"] / "traj", *FAST, *extra]


def _train(f, *extra, out=None):
    return ["train", *MLP, "--epochs", "1", "--train-n", "20", "--n", "10", "--out", out or f["out"] / "train",
            *FAST, *extra]


def _measure(f, ckpt, *extra, out=None):
    return ["measure", ckpt, *MLP, "--n", "10", "--measures", "grad", "--out", out or f["out"] / "m.parquet",
            *FAST, *extra]


CASES = {
    # missing path
    "slice: missing checkpoint": (lambda f: _slice(f, f["root"] / "nope.pt"), lambda f: ["nope.pt", "not found"]),
    "trajectory: missing directory": (lambda f: _traj(f, f["root"] / "nowhere"), lambda f: ["nowhere"]),
    "trajectory: missing file in a list": (lambda f: ["trajectory", f["ckpt"], f["root"] / "gone.pt", *MLP,
                                                      "--out", f["out"] / "t2", *FAST],
                                           lambda f: ["gone.pt"]),
    "diagnose: missing table": (lambda f: ["diagnose", f["root"] / "none.parquet"], lambda f: ["none.parquet"]),
    "diagnose: unreadable table": (lambda f: ["diagnose", f["not_parquet"]], lambda f: ["trajectory.parquet"]),
    "report: missing run": (lambda f: ["report", f["root"] / "no_run", "--quiet"], lambda f: ["no_run"]),
    "plot: missing table": (lambda f: ["plot", "curves", f["root"] / "none.parquet", "--out", f["out"] / "p"],
                            lambda f: ["none.parquet"]),
    "measure: missing checkpoint": (lambda f: _measure(f, f["root"] / "absent.pt"), lambda f: ["absent.pt"]),
    # a device this machine does not have (CI has no GPU; skipped below where one exists)
    "measure: missing GPU": (lambda f: _measure(f, f["ckpt"], "--device", "cuda:7"), lambda f: ["cuda:7"]),
    "trajectory: missing GPU": (lambda f: _traj(f, f["run"], "--device", "cuda:7"), lambda f: ["cuda:7"]),
    "train: invalid device": (lambda f: _train(f, "--device", "foo"), lambda f: ["'foo'"]),
    # a directory with no checkpoints
    "trajectory: no checkpoints": (lambda f: _traj(f, f["empty_dir"]),
                                   lambda f: ["no checkpoints found", str(f["empty_dir"])]),
    "slice: directory instead of a file": (lambda f: _slice(f, f["run"]), lambda f: [str(f["run"])]),
    # unknown architecture
    "slice: unknown arch": (lambda f: ["slice", f["ckpt"], "--arch", "resnet9000", "--out", f["out"] / "s", *FAST],
                            lambda f: ["resnet9000"]),
    "trajectory: unknown arch": (lambda f: _traj(f, f["run"], model=["--arch", "mpl"]),
                                 lambda f: ["'mpl'", "mlp"]),  # suggests the close name
    "slice: bad arch argument": (lambda f: _slice(f, f["ckpt"], "--arch-arg", "depth=3"), lambda f: ["depth"]),
    "measure: unknown arch": (lambda f: _measure(f, f["ckpt"], "--arch", "vit_huge"), lambda f: ["vit_huge"]),
    # wrong number of classes
    "slice: wrong num_classes": (lambda f: _slice(f, f["ckpt"], "--num-classes", "5"),
                                 lambda f: ["model_e1.pt", "net.3.weight", "--num-classes 10"]),
    "slice: official dict, wrong num_classes": (lambda f: _slice(f, f["official"], "--num-classes", "7"),
                                                lambda f: ["official_end.pth.tar"]),
    "slice: label out of range for the model": (
        lambda f: _slice(f, f["root"] / "mlp_k3.pt", "--num-classes", "3"), lambda f: ["3 classes"]),
    "measure: wrong num_classes": (lambda f: _measure(f, f["ckpt"], "--num-classes", "100"),
                                   lambda f: ["model_e1.pt", "--num-classes 10"]),
    # mismatched input size
    "slice: cnn checkpoint for 4x4 inputs, 8x8 data": (
        lambda f: ["slice", f["cnn4"], "--arch", "small_cnn", "--arch-arg", "width=4", "--n", "20", "--index", "0",
                   "--grid", "3", "--dirs", "random", "--out", f["out"] / "s", *FAST],
        lambda f: ["cnn_4x4.pt"]),
    "slice: model built for 4x4 inputs, 8x8 data": (
        lambda f: _slice(f, f["mlp4"], "--arch-arg", "input_shape=(1,4,4)"), lambda f: ["mlp_4x4.pt", "(1, 8, 8)"]),
    "measure: model built for 4x4 inputs, 8x8 data": (
        lambda f: _measure(f, f["mlp4"], "--arch-arg", "input_shape=(1,4,4)"), lambda f: ["mlp_4x4.pt", "(1, 8, 8)"]),
    # empty data subset
    "slice: --n 0": (lambda f: _slice(f, f["ckpt"], "--n", "0"), lambda f: ["--n", "0"]),
    "trajectory: --n larger than the split": (lambda f: _traj(f, f["run"], "--n", "100000"),
                                              lambda f: ["100000"]),
    "trajectory: empty dataset file": (
        lambda f: _traj(f, f["cifar_run"], "--data", "cifar10", "--data-root", f["empty_npz"],
                        model=["--arch", "mlp", "--arch-arg", "hidden=(16,)"]),
        lambda f: ["cifar10.npz", "no samples"]),
    "slice: index past the subset": (lambda f: _slice(f, f["ckpt"], "--index", "25"), lambda f: ["25"]),
    "measure: --n 0": (lambda f: _measure(f, f["ckpt"], "--n", "0"), lambda f: ["--n", "0"]),
    "measure: empty dataset file": (
        lambda f: ["measure", f["cifar_ckpt"], *MLP, "--data", "cifar10", "--data-root", f["empty_npz"],
                   "--out", f["out"] / "m.parquet", *FAST], lambda f: ["cifar10.npz", "no samples"]),
    # NaN/Inf in the inputs
    "trajectory: NaN/Inf images": (
        lambda f: _traj(f, f["cifar_run"], "--data", "cifar10", "--data-root", f["nan_npz"]),
        lambda f: ["cifar10.npz", "NaN/Inf"]),
    "slice: NaN/Inf images": (
        lambda f: ["slice", f["cifar_ckpt"], *MLP, "--data", "cifar10", "--data-root", f["nan_npz"], "--index", "0",
                   "--grid", "3", "--dirs", "random", "--out", f["out"] / "s", *FAST],
        lambda f: ["NaN/Inf"]),
    "measure: NaN/Inf images": (
        lambda f: ["measure", f["cifar_ckpt"], *MLP, "--data", "cifar10", "--data-root", f["nan_npz"],
                   "--out", f["out"] / "m.parquet", *FAST], lambda f: ["cifar10.npz", "NaN/Inf"]),
    # eps < 0 and other bad numbers
    "slice: eps < 0": (lambda f: _slice(f, f["ckpt"], "--eps", "-0.1"), lambda f: ["--eps", "-0.1"]),
    "trajectory: eps < 0": (lambda f: _traj(f, f["run"], "--eps=-1"), lambda f: ["--eps", "-1"]),
    "trajectory: eps NaN": (lambda f: _traj(f, f["run"], "--eps", "nan"), lambda f: ["--eps", "nan"]),
    "measure: eps < 0": (lambda f: _measure(f, f["ckpt"], "--eps", "-0.03"), lambda f: ["--eps", "-0.03"]),
    "measure: eps inf": (lambda f: _measure(f, f["ckpt"], "--eps", "inf"), lambda f: ["--eps", "inf"]),
    "measure: eig-iters 0": (lambda f: _measure(f, f["ckpt"], "--eig-iters", "0"), lambda f: ["--eig-iters", "0"]),
    "slice: steps 0": (lambda f: _slice(f, f["ckpt"], "--steps", "0"), lambda f: ["--steps", "0"]),
    "slice: radius 0": (lambda f: _slice(f, f["ckpt"], "--radius", "0"), lambda f: ["--radius", "0"]),
    # grid size 0
    "slice: grid 0": (lambda f: _slice(f, f["ckpt"], "--grid", "0"), lambda f: ["--grid", "0"]),
    "slice: grid -3": (lambda f: _slice(f, f["ckpt"], "--grid=-3"), lambda f: ["--grid", "-3"]),
    "slice: grid not a number": (lambda f: _slice(f, f["ckpt"], "--grid", "ten"), lambda f: ["--grid", "ten"]),
    # unwritable output directory
    "slice: output under a file": (lambda f: _slice(f, f["ckpt"], out=f["a_file"] / "sub"), lambda f: ["a_file.txt"]),
    "trajectory: output under a file": (
        lambda f: ["trajectory", f["run"], *MLP, "--out", f["a_file"] / "sub", *FAST], lambda f: ["a_file.txt"]),
    "trajectory: output is a file": (
        lambda f: ["trajectory", f["run"], *MLP, "--out", f["a_file"], *FAST], lambda f: ["a_file.txt"]),
    "measure: output under a file": (lambda f: _measure(f, f["ckpt"], out=f["a_file"] / "m.parquet"),
                                     lambda f: ["a_file.txt"]),
    "measure: output folder missing": (lambda f: _measure(f, f["ckpt"], out=f["root"] / "no" / "m.parquet"),
                                       lambda f: [str(Path("no"))]),
    "measure: output format": (lambda f: _measure(f, f["ckpt"], out=f["root"] / "m.xlsx"), lambda f: ["m.xlsx"]),
    # unknown measure name
    "trajectory: unknown measure": (lambda f: _traj(f, f["run"], "--measures", "grad,curvy"),
                                    lambda f: ["curvy", "grad"]),
    "measure: unknown measure": (lambda f: _measure(f, f["ckpt"], "--measures", "grad,hessian_trace"),
                                 lambda f: ["hessian_trace", "curv_adv"]),
    # training runs
    "train: epochs 0": (lambda f: _train(f, "--epochs", "0"), lambda f: ["--epochs", "0"]),
    "train: label noise 1.5": (lambda f: _train(f, "--label-noise", "1.5"), lambda f: ["label_noise", "1.5"]),
    "train: lr 0": (lambda f: _train(f, "--lr", "0"), lambda f: ["lr must be > 0"]),
    "train: decreasing milestones": (lambda f: _train(f, "--lr-milestones", "0.9,0.5"), lambda f: ["0.9, 0.5"]),
    "train: unknown arch": (lambda f: _train(f, "--arch", "lenet"), lambda f: ["lenet"]),
    "train: output under a file": (lambda f: _train(f, out=f["a_file"] / "run"), lambda f: ["a_file.txt"]),
    # other unknown names
    "slice: unknown direction": (lambda f: _slice(f, f["ckpt"], "--dirs", "upward"), lambda f: ["upward"]),
    "slice: unknown dataset": (lambda f: _slice(f, f["ckpt"], "--data", "mnist"), lambda f: ["mnist"]),
    "slice: unknown normalization": (lambda f: _slice(f, f["ckpt"], "--normalize", "imagenet"),
                                     lambda f: ["imagenet"]),
    "trajectory: unknown split": (lambda f: _traj(f, f["run"], "--splits", "train,valid"), lambda f: ["valid"]),
}


@pytest.fixture(scope="module")
def k3_checkpoint(files):
    torch.manual_seed(1)
    return _save_state(files["root"] / "mlp_k3.pt", create_model("mlp", hidden=(16,), num_classes=3))


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_error_exits_2_with_one_line(case, files, k3_checkpoint):
    argv_fn, words_fn = CASES[case]
    code, _out, err = run_main(argv_fn(files))
    assert_user_error(code, err, *words_fn(files))


def _denied_dir(files) -> Path | None:
    """A folder this process may not create anything in: a chmod-ed folder for a normal user; as root (who
    writes everywhere) a path under sysfs, where even root may not create folders."""
    import os

    if os.geteuid() != 0:
        locked = files["root"] / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o500)
        return locked
    probe = Path("/sys/landscape-reliability-probe")
    try:
        probe.mkdir()
    except PermissionError:
        return Path("/sys")
    except OSError:
        return None
    probe.rmdir()
    return None


@pytest.mark.parametrize("command", ["slice", "trajectory", "measure"])
def test_permission_denied_output_dir(files, command):
    denied = _denied_dir(files)
    if denied is None:
        pytest.skip("no folder here refuses writes to this user")
    out = denied / "landscape-out"
    argv = {"slice": lambda: _slice(files, files["ckpt"], out=out),
            "trajectory": lambda: _traj(files, files["run"], out=out),
            "measure": lambda: _measure(files, files["ckpt"], out=out / "m.parquet")}[command]()
    code, _out, err = run_main(argv)
    assert_user_error(code, err, str(denied))


def test_successful_run_is_not_an_error(files):
    """The same options without the fault work: the failures above come from the bad value alone."""
    code, out, err = run_main(_slice(files, files["ckpt"]))
    assert code == 0, err
    assert "Traceback" not in err
    assert (files["out"] / "slice" / "slices_1d.parquet").is_file()
    code, out, err = run_main(_measure(files, files["ckpt"]))
    assert code == 0, err
    assert (files["out"] / "m.parquet").is_file()


# ------------------------------------------------------------------------------------------------ real processes


def _start(argv: list, debug: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "landscape.cli", str(argv[0]), *(["--debug"] if debug else []), *map(str, argv[1:])]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


SUBPROCESS_CASES = ["trajectory: no checkpoints", "measure: unknown measure", "slice: grid 0"]


@pytest.fixture(scope="module")
def processes(files, k3_checkpoint):
    """Start every subprocess case at once (each pays the torch import; in parallel they overlap)."""
    procs = {case: _start(CASES[case][0](files)) for case in SUBPROCESS_CASES}
    procs["debug"] = _start(_slice(files, files["ckpt"], "--num-classes", "5"), debug=True)
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _out, err = proc.communicate(timeout=180)
    return proc.returncode, err


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_console_entry_point_prints_one_line(case, files, processes):
    code, err = _finish(processes[case])
    assert_user_error(code, err, *CASES[case][1](files))


def test_debug_shows_the_traceback(processes):
    code, err = _finish(processes["debug"])
    assert code != 0
    assert "Traceback (most recent call last)" in err
    assert "model_e1.pt" in err


@pytest.mark.parametrize("command, fmt", [("measure", "parquet"), ("measure", "csv"), ("slice", "parquet")])
def test_disk_full_while_writing_the_output_is_one_line_and_leaves_no_partial_file(files, monkeypatch, command, fmt):
    import errno

    import pandas as pd

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a table")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet" if fmt == "parquet" else "to_csv", full)
    folder = files["root"] / f"full_{command}_{fmt}"
    folder.mkdir()
    argv = (_measure(files, files["ckpt"], out=folder / f"m.{fmt}") if command == "measure"
            else _slice(files, files["ckpt"], out=folder))
    code, _out, err = run_main(argv)
    assert_user_error(code, err, "No space left on device")
    assert list(folder.iterdir()) == []  # neither the table nor a temporary file
