"""Every row of the README's "Your checkpoints" table runs as printed and gives the published network's numbers.

The commands are read from README.md. For each row a checkpoint is written at the command's path in the layout
that source writes, a 4-image CIFAR-10 stand-in is put where ``--data cifar10`` looks, and the command runs with
small-size options appended (``--n 2 --measures grad --steps 1``). Its ``loss_clean`` column must equal the
cross-entropy of an independent implementation of the published network (``published.py``) on the same images.
The WideResNet row runs with ``depth=10, widen_factor=2`` in place of 34/10 (the same code path, 40x fewer
weights).
"""
from __future__ import annotations

import re
import shlex
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from landscape.checkpoints import load as load_module
from landscape.cli import main
from landscape.datasets import load_dataset

from . import published as pub
from .readme import table_rows

SMALL = ["--n", "2", "--measures", "grad", "--steps", "1", "--batch-size", "2", "--quiet"]
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


ROWS = table_rows("Your checkpoints")


def _row(prefix: str) -> str:
    matches = [cmd for label, cmd in ROWS.items() if label.startswith(prefix)]
    assert len(matches) == 1, f"README table: expected one row starting {prefix!r}, found {list(ROWS)}"
    return matches[0]


def test_the_table_has_the_rows_the_tests_exercise():
    assert len(ROWS) == 8
    for cmd in ROWS.values():
        assert "--eps 0.0314" in cmd and "--data cifar10" in cmd


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder with a fake CIFAR-10 (8 train, 4 test images) where ``--data cifar10`` looks."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "cifar10.npz", x_train=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(8) % 4, x_test=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(4))
    monkeypatch.setenv("LANDSCAPE_DATA", str(data))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(load_module, "_NOTES_SHOWN", set())
    return tmp_path


def _run(cmd: str, capsys, *, replace: dict[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """Run a README command (plus SMALL); returns the table it wrote and its stderr."""
    for old, new in (replace or {}).items():
        assert old in cmd
        cmd = cmd.replace(old, new)
    argv = shlex.split(cmd)
    assert argv[0] == "landscape"
    capsys.readouterr()
    rc = main(argv[1:] + SMALL)
    err = capsys.readouterr().err
    assert rc == 0, err
    out = argv[argv.index("--out") + 1]
    return pd.read_csv(out), err


def _checkpoint_path(cmd: str) -> Path:
    path = Path(shlex.split(cmd)[2])
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _check_losses(df: pd.DataFrame, forward) -> None:
    x, y = load_dataset("cifar10", "test", n=2, seed=0)
    with torch.no_grad():
        want = F.cross_entropy(forward(x), y, reduction="none")
    got = torch.tensor(df.sort_values("sample")["loss_clean"].to_numpy(), dtype=torch.float32)
    assert len(got) == 2
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _advlc_dict(sd):
    return {"epoch": 200, "state_dict": sd, "best_acc1": 82.0, "best_pgd": 53.0, "best_fgsm": 57.5,
            "optimizer": {"state": {}, "param_groups": []}}


def test_row_advlc_preact_resnet18(workdir, capsys):
    cmd = _row("AdvLC repo (")
    sd = pub.preact18_weights(20)
    torch.save(_advlc_dict(sd), _checkpoint_path(cmd))
    df, err = _run(cmd, capsys)
    _check_losses(df, lambda x: pub.preact18_forward(sd, x, shortcut_on="raw"))
    assert "note" not in err


def test_row_advlc_wide_resnet(workdir, capsys):
    cmd = _row("AdvLC repo, its WideResNet")
    sd = pub.advlc_wrn_weights(21, depth=10, width=2)
    torch.save(_advlc_dict(sd), _checkpoint_path(cmd))
    df, err = _run(cmd, capsys, replace={"depth=34": "depth=10", "widen_factor=10": "widen_factor=2"})
    _check_losses(df, lambda x: pub.advlc_wrn_forward(sd, x, depth=10))
    assert "note" not in err


def test_row_advlc_swa_file(workdir, capsys):
    cmd = _row("AdvLC repo, its SWA file")
    sd = pub.preact18_weights(26)
    torch.save({"state_dict": sd, "num": 40, "best_acc": 80.5, "best_pgd": 52.0, "best_fgm": 56.0},
               _checkpoint_path(cmd))
    df, err = _run(cmd, capsys)
    _check_losses(df, lambda x: pub.preact18_forward(sd, x, shortcut_on="raw"))
    assert "note" not in err  # the layout decides: no default, no evidence needed


def test_row_a_trusted_whole_model(workdir, capsys, monkeypatch):
    from .test_swa_and_whole_models import whole_model

    cmd = _row("a whole pickled model")
    module, sd = whole_model(workdir, monkeypatch, 27)  # the AdvLC wiring, keys of the Rice wiring
    torch.save(module, _checkpoint_path(cmd))
    df, err = _run(cmd, capsys)
    _check_losses(df, lambda x: pub.preact18_forward(sd, x, shortcut_on="raw"))
    assert "fully unpickling" in err and "note" not in err
    df, err = _run(cmd + " --arch preact_resnet18_rice", capsys)  # checked against it, not used
    _check_losses(df, lambda x: pub.preact18_forward(sd, x, shortcut_on="raw"))
    assert "using it as itself (whole_net.PreActNet)" in err


def test_row_rice_et_al(workdir, capsys):
    cmd = _row("Rice et al.")
    sd = pub.preact18_weights(22)
    torch.save({f"module.{k}": v for k, v in sd.items()}, _checkpoint_path(cmd))
    df, err = _run(cmd, capsys)
    _check_losses(df, pub.normalized(lambda x: pub.preact18_forward(sd, x, shortcut_on="preact"),
                                     CIFAR_MEAN, CIFAR_STD))
    assert "note" not in err  # the exact wiring is named in the command


def test_row_robustbench(workdir, capsys):
    cmd = _row("RobustBench")
    sd = pub.preact18_weights(23, final_bn=False)
    mu, sigma = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.save({**sd, "mu": mu, "sigma": sigma}, _checkpoint_path(cmd))
    df, _ = _run(cmd, capsys)
    _check_losses(df, pub.normalized(lambda x: pub.preact18_forward(sd, x, shortcut_on="raw", final_bn=False),
                                     CIFAR_MEAN, CIFAR_STD))


def test_row_robustbench_last_best_file(workdir, capsys):
    cmd = _row("RobustBench")
    last, best = pub.preact18_weights(24, final_bn=False), pub.preact18_weights(25, final_bn=False)
    torch.save({"last": last, "best": best}, _checkpoint_path(cmd))
    df, err = _run(cmd, capsys)
    _check_losses(df, lambda x: pub.preact18_forward(last, x, shortcut_on="raw", final_bn=False))
    assert "using 'last' (choose with --checkpoint-entry" in err
    df, _ = _run(cmd + " --checkpoint-entry best", capsys)
    _check_losses(df, lambda x: pub.preact18_forward(best, x, shortcut_on="raw", final_bn=False))


USER_MODULE = textwrap.dedent('''
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self, width=8, num_classes=10):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, width, 3, stride=2), nn.Softplus(), nn.AdaptiveAvgPool2d(2))
            self.classifier = nn.Linear(4 * width, num_classes)

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))
''')


def test_row_your_own_class(workdir, capsys, monkeypatch):
    cmd = _row("your own class")
    spec = re.search(r"--arch (\S+):Net", cmd).group(1)
    Path(spec).write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)  # another test's file of that name
    import my_models

    with torch.random.fork_rng():
        torch.manual_seed(1)
        reference = my_models.Net(width=64).eval()
    torch.save({"model_state_dict": reference.state_dict(), "epoch": 50}, _checkpoint_path(cmd))
    df, _ = _run(cmd, capsys)
    _check_losses(df, reference)


def test_row_the_projects_own_train(workdir, capsys):
    cmd = _row("this project's")
    path = _checkpoint_path(cmd)
    rc = main(["train", "--arch", "preact_resnet18", "--data", "cifar10", "--epochs", "1", "--train-n", "4",
               "--n", "2", "--steps", "1", "--eval-steps", "1", "--batch-size", "4", "--eps", "0.0314",
               "--out", str(path.parent), "--quiet"])
    assert rc == 0 and path.exists()
    raw = torch.load(path, weights_only=True)
    assert raw["arch"]["name"] == "preact_resnet18_rice"  # what `train` built, recorded in the file
    df, err = _run(cmd, capsys)
    _check_losses(df, lambda x: pub.preact18_forward(raw["state_dict"], x, shortcut_on="preact"))
    assert "note" not in err
