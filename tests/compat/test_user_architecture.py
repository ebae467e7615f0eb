"""Your own architecture on the command line: ``--arch file.py:Class`` / ``package.module:Class`` with
``--arch-arg``, in measure, slice, train and trajectory (serial, process and Ray workers import the file)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from landscape.cli import main
from landscape.datasets import load_dataset

NET = textwrap.dedent('''
    import torch.nn as nn

    class DigitsNet(nn.Module):
        """(B, in_channels, 8, 8) -> (B, num_classes); smooth, so curvature measures are non-zero."""

        def __init__(self, hidden=16, in_channels=1, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
            self.fc1 = nn.Linear(4 * 8 * 8, hidden)
            self.fc2 = nn.Linear(hidden, num_classes)
            self.act = nn.Softplus()

        def forward(self, x):
            return self.fc2(self.act(self.fc1(self.act(self.conv(x)).flatten(1))))
''')


@pytest.fixture
def user_file(tmp_path) -> Path:
    path = tmp_path / "nets" / "my_net.py"
    path.parent.mkdir()
    path.write_text(NET)
    return path


def _reference(user_file: Path, hidden: int, seed: int):
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_net", user_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return module.DigitsNet(hidden=hidden).eval()


def _save_run(folder: Path, user_file: Path, epochs=(1, 2)) -> dict[int, torch.nn.Module]:
    folder.mkdir(parents=True)
    models = {}
    for e in epochs:
        models[e] = _reference(user_file, 6, seed=e)
        torch.save({"epoch": e, "model_state_dict": models[e].state_dict()}, folder / f"epoch_{e}.pt")
    return models


def _losses(model, n=8, split="test"):
    x, y = load_dataset("digits", split, n=n, seed=0)
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def test_measure_with_a_file_spec_and_arch_args(tmp_path, user_file, monkeypatch):
    models = _save_run(tmp_path / "run", user_file, epochs=(1,))
    monkeypatch.chdir(tmp_path)  # a relative spec, as a user would type it
    rc = main(["measure", "run/epoch_1.pt", "--arch", "nets/my_net.py:DigitsNet", "--arch-arg", "hidden=6",
               "--data", "digits", "--n", "8", "--measures", "grad", "--steps", "1", "--eps", "0.03",
               "--out", "m.csv", "--quiet"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "m.csv").sort_values("sample")
    torch.testing.assert_close(torch.tensor(df["loss_clean"].to_numpy(), dtype=torch.float32), _losses(models[1]),
                               rtol=1e-5, atol=1e-6)


def test_measure_with_a_module_spec(tmp_path, user_file, monkeypatch):
    models = _save_run(tmp_path / "run", user_file, epochs=(1,))
    monkeypatch.syspath_prepend(str(user_file.parent))
    rc = main(["measure", str(tmp_path / "run/epoch_1.pt"), "--arch", "my_net:DigitsNet", "--arch-arg", "hidden=6",
               "--data", "digits", "--n", "8", "--measures", "grad", "--steps", "1", "--eps", "0.03",
               "--out", str(tmp_path / "m.csv"), "--quiet"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "m.csv").sort_values("sample")
    torch.testing.assert_close(torch.tensor(df["loss_clean"].to_numpy(), dtype=torch.float32), _losses(models[1]),
                               rtol=1e-5, atol=1e-6)


def test_slice_with_a_file_spec(tmp_path, user_file):
    models = _save_run(tmp_path / "run", user_file, epochs=(1,))
    rc = main(["slice", str(tmp_path / "run/epoch_1.pt"), "--arch", f"{user_file}:DigitsNet", "--arch-arg",
               "hidden=6", "--data", "digits", "--n", "8", "--index", "0..1", "--dirs", "random", "--grid", "3",
               "--radius", "0.05", "--out", str(tmp_path / "sl"), "--quiet"])
    assert rc == 0
    from landscape.runs import run_file

    df = pd.read_parquet(tmp_path / "sl" / run_file("slices_1d"))
    centre = df[df["a"] == 0].sort_values("sample")["loss"].to_numpy()
    torch.testing.assert_close(torch.tensor(centre, dtype=torch.float32), _losses(models[1])[:2], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("executor", ["serial", "process", "ray"])
def test_trajectory_workers_import_the_file_themselves(tmp_path, user_file, executor):
    if executor == "ray":
        ray = pytest.importorskip("ray")
    models = _save_run(tmp_path / "run", user_file)
    argv = ["trajectory", str(tmp_path / "run"), "--arch", f"{user_file}:DigitsNet", "--arch-arg", "hidden=6",
            "--data", "digits", "--n", "8", "--measures", "grad", "--steps", "1", "--eps", "0.03", "--splits", "test",
            "--executor", executor, "--workers", "1" if executor == "serial" else "2",
            "--out", str(tmp_path / executor), "--quiet"]
    try:
        assert main(argv) == 0
    finally:
        if executor == "ray" and ray.is_initialized():
            ray.shutdown()
    table = pd.read_parquet(tmp_path / executor / "trajectory.parquet")
    assert table["error"].isna().all()
    for epoch, model in models.items():
        row = table[table["epoch"] == epoch]
        assert float(row["loss_clean"].iloc[0]) == pytest.approx(float(_losses(model).mean()), rel=1e-5, abs=1e-6)


def test_train_with_a_file_spec_records_it(tmp_path, user_file):
    out = tmp_path / "trained"
    rc = main(["train", "--arch", f"{user_file}:DigitsNet", "--arch-arg", "hidden=5", "--data", "digits",
               "--epochs", "1", "--train-n", "40", "--n", "10", "--steps", "1", "--eval-steps", "1", "--eps", "0.03",
               "--out", str(out), "--quiet"])
    assert rc == 0
    raw = torch.load(out / "model_e001.pt", weights_only=True)
    assert raw["arch"] == {"name": f"{user_file}:DigitsNet", "kwargs": {"hidden": 5, "in_channels": 1,
                                                                         "num_classes": 10}}
    reference = _reference(user_file, 5, seed=0)
    reference.load_state_dict(raw["state_dict"])
    rc = main(["measure", str(out / "model_e001.pt"), "--arch", f"{user_file}:DigitsNet", "--arch-arg", "hidden=5",
               "--data", "digits", "--n", "8", "--measures", "grad", "--steps", "1", "--eps", "0.03",
               "--out", str(tmp_path / "m.csv"), "--quiet"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "m.csv").sort_values("sample")
    torch.testing.assert_close(torch.tensor(df["loss_clean"].to_numpy(), dtype=torch.float32), _losses(reference),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch, message", [
    ("nets/missing.py:Net", "file .*missing.py not found"),
    ("{user}:Nope", "has no 'Nope' \\(classes there: DigitsNet"),
    ("no_such_package.mod:Net", "cannot import module 'no_such_package.mod'"),
    ("preact_resnt18", "did you mean preact_resnet18"),
])
def test_bad_arch_is_one_line_exit_2(tmp_path, user_file, capsys, arch, message):
    _save_run(tmp_path / "run", user_file, epochs=(1,))
    rc = main(["measure", str(tmp_path / "run/epoch_1.pt"), "--arch", arch.format(user=user_file), "--data",
               "digits", "--out", str(tmp_path / "m.csv")])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err


@pytest.mark.parametrize("command", ["trajectory", "train"])
def test_checkpoint_entry_where_it_does_not_apply_is_refused(tmp_path, capsys, command):
    argv = [command, *([str(tmp_path)] if command == "trajectory" else []), "--arch", "mlp", "--data", "digits",
            "--checkpoint-entry", "best", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "--checkpoint-entry" in capsys.readouterr().err
