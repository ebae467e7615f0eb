"""An SVHN, Tiny-ImageNet or ImageFolder run goes through measure, slice, trajectory and report with one command
each, on generated miniatures of each layout (the builders of the README table's test)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from landscape.checkpoints import save_checkpoint
from landscape.cli import main
from landscape.models import create_model

from .test_readme_data_table import _imagefolder, _svhn, _tiny

LAYOUTS = {
    "svhn": (lambda root, rng: _svhn(root / "svhn", rng), ["--data", "svhn", "--data-root", "svhn"], 10),
    "tiny-imagenet": (lambda root, rng: _tiny(root, rng, reorganised=False),
                      ["--data", "tiny-imagenet", "--data-root", "tiny-imagenet-200"], 200),
    "imagefolder": (lambda root, rng: _imagefolder(root / "images", rng),
                    ["--data", "imagefolder", "--data-root", "images", "--data-arg", "size=32"], 3),
}
SMALL = ["--n", "all", "--steps", "1", "--quiet"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_one_command_each(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    build, data, classes = LAYOUTS[name]
    x, y = build(tmp_path, np.random.default_rng(1))
    run = tmp_path / "run"
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        model = create_model("small_cnn", in_channels=3, num_classes=classes, input_size=x.shape[-1], width=4)
        save_checkpoint(run / f"model_e{epoch:03d}.pt", model, epoch=epoch)

    def ok(*argv):
        rc = main([str(a) for a in argv])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        return captured.out

    out = ok("measure", run / "model_e002.pt", *data, "--out", "m.csv", "--measures", "grad,curv_adv", *SMALL)
    np.testing.assert_array_equal(pd.read_csv("m.csv")["label"], y)
    assert "8/255" in out
    ok("slice", run / "model_e002.pt", *data, "--index", "0..1", "--grid", "3", "--dirs", "adversarial", "random",
       "--kind", "1d", "--out", "slices", "--quiet")
    sl = pd.read_parquet(Path("slices") / "slices_1d.parquet")
    assert set(sl["index"]) == {0, 1} and sl["loss"].notna().all()
    ok("trajectory", run, *data, "--out", "analysis", "--measures", "grad", *SMALL)
    table = pd.read_parquet(Path("analysis") / "trajectory.parquet")
    assert sorted(table["epoch"].unique()) == [1, 2] and table["error"].isna().all()
    assert (table[table["split"] == "test"]["n"] == len(y)).all()
    ok("report", "analysis", "--static")
    assert (Path("analysis") / "report" / "report.html").is_file()
