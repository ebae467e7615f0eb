"""The AdvLC repo's SWA file, whole pickled models, files that record their architecture, Rice et al.'s WRN widths,
and one wiring per trajectory run, each compared with the independent implementations in ``published.py``.

* The AdvLC repo (TreeLLi/Combating-RO-AdvLC ``src/utils/train.py``) writes ``<id>_swa_end`` beside ``<id>_end``:
  ``{'state_dict': swa_model.state_dict(), 'num', 'best_acc', 'best_pgd', 'best_fgm'}``. ``swa_model`` is built by
  the same ``fetch_model`` as the trained network and never wrapped (no ``module.`` prefix, no ``n_averaged``).
* Rice et al. (locuslab/robust_overfitting ``train_cifar.py``) train ``WideResNet(34, 10, widen_factor=k)`` with
  ``--width-factor`` 1 to 20 and save ``model.state_dict()`` of an ``nn.DataParallel`` model.
"""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from landscape.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from landscape.models import create_model
from landscape.trajectory import analyse_trajectory

from . import published as pub

TOL = dict(rtol=1e-5, atol=1e-5)


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def _swa_dict(sd):
    return {"state_dict": sd, "num": 17, "best_acc": 80.1, "best_pgd": 51.7, "best_fgm": 56.3}


def _advlc_dict(sd, epoch):
    return {"epoch": epoch, "state_dict": sd, "best_acc1": 81.2, "best_pgd": 52.9, "best_fgsm": 57.0,
            "optimizer": {"state": {}, "param_groups": []}}


# ------------------------------------------------------------------------------------ the AdvLC SWA file


def test_advlc_swa_file_gets_the_advlc_wiring(tmp_path, x, capsys):
    sd = pub.preact18_weights(30)
    torch.save(_swa_dict(sd), tmp_path / "ab12_swa_end")
    model = load_model(tmp_path / "ab12_swa_end", "preact_resnet18")
    want = pub.preact18_forward(sd, x, shortcut_on="raw")
    torch.testing.assert_close(_logits(model, x), want, **TOL)
    assert model.landscape_arch["name"] == "preact_resnet18_advlc" and capsys.readouterr().err == ""
    ckpt = load_checkpoint(tmp_path / "ab12_swa_end")
    assert ckpt.layout == "advlc_swa" and ckpt.epoch is None
    assert ckpt.meta == {"num": 17, "best_acc": 80.1, "best_pgd": 51.7, "best_fgm": 56.3}
    # what loading it into the Rice wiring (the old default for this layout) computes instead
    rice = pub.preact18_forward(sd, x, shortcut_on="preact")
    assert (rice - want).abs().max() > 1e-2


def test_advlc_swa_wide_resnet(tmp_path, x):
    sd = pub.advlc_wrn_weights(31, depth=10, width=2)
    torch.save(_swa_dict(sd), tmp_path / "wr_swa_pgd")
    model = load_model(tmp_path / "wr_swa_pgd", "wide_resnet")  # depth and width read from the shapes
    torch.testing.assert_close(_logits(model, x), pub.advlc_wrn_forward(sd, x, depth=10), **TOL)
    assert model.landscape_arch == {"name": "wide_resnet_advlc", "kwargs": {"depth": 10, "widen_factor": 2}}
    same = load_model(tmp_path / "wr_swa_pgd", "wide_resnet", width=2)  # the repo's own argument name
    torch.testing.assert_close(_logits(same, x), pub.advlc_wrn_forward(sd, x, depth=10), **TOL)


def test_an_advlc_run_folder_is_measured_in_one_wiring(tmp_path):
    """``<id>_end``, its copy ``<id>_pgd`` and the SWA file: every row in the AdvLC wiring."""
    run = tmp_path / "trained" / "ab12"
    run.mkdir(parents=True)
    weights = {"ab12_end": pub.preact18_weights(32), "ab12_pgd": pub.preact18_weights(33),
               "ab12_swa_end": pub.preact18_weights(34)}
    torch.save(_advlc_dict(weights["ab12_end"], 30), run / "ab12_end")
    torch.save(_advlc_dict(weights["ab12_pgd"], 28), run / "ab12_pgd")
    torch.save(_swa_dict(weights["ab12_swa_end"]), run / "ab12_swa_end")
    xs = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ys = torch.tensor([0, 1, 2, 3])
    with pytest.warns(UserWarning):  # the SWA file stores no epoch
        table = analyse_trajectory(sorted(run.iterdir()), "preact_resnet18", data=(xs, ys), out_dir=tmp_path / "out",
                                   n=None, splits=["test"], steps=1, eps=0.03, measures=["grad"], progress=False)
    assert table["error"].isna().all() and len(table) == 3
    assert set(table["arch"]) == {"preact_resnet18_advlc"}
    for _, row in table.iterrows():
        name = row["checkpoint"].rsplit("/", 1)[-1]
        with torch.no_grad():
            want = torch.nn.functional.cross_entropy(pub.preact18_forward(weights[name], xs, shortcut_on="raw"), ys)
        assert row["loss_clean"] == pytest.approx(want.item(), rel=1e-5, abs=1e-5), name


def test_an_advlc_run_folder_is_found_as_the_repo_writes_it(tmp_path):
    """The folder itself: suffix-less ``<id>_end`` and ``<id>_swa_end`` are measured, the ``<id>_pgd`` copy is a
    best-model marker matched to its epoch, the log is skipped."""
    import shutil

    run = tmp_path / "trained" / "ab12"
    run.mkdir(parents=True)
    torch.save(_advlc_dict(pub.preact18_weights(32), 30), run / "ab12_end")
    shutil.copyfile(run / "ab12_end", run / "ab12_pgd")  # the repo copies _end when PGD accuracy is best
    torch.save(_swa_dict(pub.preact18_weights(34)), run / "ab12_swa_end")
    (run / "train.log").write_text("epoch 30\n")
    xs = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning):
        table = analyse_trajectory(run, "preact_resnet18", data=(xs, torch.tensor([0, 1])), out_dir=tmp_path / "out",
                                   n=None, splits=["test"], steps=1, eps=0.03, measures=["grad"], progress=False)
    assert sorted(c.rsplit("/", 1)[-1] for c in table["checkpoint"]) == ["ab12_end", "ab12_swa_end"]
    assert set(table["arch"]) == {"preact_resnet18_advlc"}
    markers = table.attrs["markers"]
    assert [(m["checkpoint"].rsplit("/", 1)[-1], m["kind"], m["epoch"]) for m in markers] == [("ab12_pgd", "pgd", 30)]


def test_rice_best_copy_decides_the_run_and_bare_epochs_follow(tmp_path, capsys):
    run = tmp_path / "rice"
    run.mkdir()
    sd = pub.preact18_weights(35)
    torch.save({f"module.{k}": v for k, v in sd.items()}, run / "model_7.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "test_robust_acc": 0.5},
               run / "model_best.pth")
    xs, ys = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.tensor([4, 5])
    with pytest.warns(UserWarning, match=r"model_best\.pth = epoch 7"):
        table = analyse_trajectory(run, "preact_resnet18", data=(xs, ys), out_dir=tmp_path / "out", n=None,
                                   splits=["test"], steps=1, eps=0.03, measures=["grad"], progress=False)
    assert table["arch"].tolist() == ["preact_resnet18_rice"]
    assert "fit several" not in capsys.readouterr().err  # the layout of model_best.pth decided
    with torch.no_grad():
        want = torch.nn.functional.cross_entropy(pub.preact18_forward(sd, xs, shortcut_on="preact"), ys)
    assert table["loss_clean"].iloc[0] == pytest.approx(want.item(), rel=1e-5, abs=1e-5)


# ------------------------------------------------------------------------------------ Rice et al.'s WideResNets


@pytest.mark.parametrize("depth, width", [(34, 1), (10, 3)])
def test_rice_wide_resnet_of_any_width_loads_as_the_family(tmp_path, x, depth, width):
    sd = pub.trades_wrn_weights(36, depth=depth, width=width)
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "model_99.pth")
    model = load_model(tmp_path / "model_99.pth", "wide_resnet")
    torch.testing.assert_close(_logits(model, x), pub.trades_wrn_forward(sd, x, depth=depth), **TOL)
    assert model.landscape_arch == {"name": "wide_resnet_trades", "kwargs": {"depth": depth, "widen_factor": width}}


def test_an_error_for_a_family_names_the_family_and_the_wiring_tried(tmp_path, capsys):
    torch.save({f"module.{k}": v for k, v in pub.trades_wrn_weights(37, depth=10, width=1).items()},
               tmp_path / "model_5.pth")
    with pytest.raises(CheckpointError) as exc:
        load_model(tmp_path / "model_5.pth", "wide_resnet", depth=16, widen_factor=1)
    msg = str(exc.value)
    assert "does not fit family wide_resnet (tried wide_resnet_trades(depth=16, widen_factor=1)): " in msg
    assert "missing keys: block1.layer.1.bn1.weight" in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match=r"does not fit family preact_resnet18 \(tried preact_resnet18_rice"):
        load_model(tmp_path / "model_5.pth", "preact_resnet18")
    assert capsys.readouterr().err == ""  # no note before (or instead of) the error


def test_notes_wait_for_the_model_to_load(tmp_path, capsys):
    """A bare Rice file (two notes when it loads) with a wrong num_classes: the error stands alone."""
    torch.save({f"module.{k}": v for k, v in pub.preact18_weights(38).items()}, tmp_path / "model_3.pth")
    with pytest.raises(CheckpointError, match=r"pass num_classes=10"):
        load_model(tmp_path / "model_3.pth", "preact_resnet18", num_classes=100)
    assert capsys.readouterr().err == ""
    load_model(tmp_path / "model_3.pth", "preact_resnet18")
    err = capsys.readouterr().err
    assert err.count("landscape: note:") == 2 and "using preact_resnet18_rice" in err


# ------------------------------------------------------------------------------------ files that record their arch


def test_arch_none_uses_the_record_or_says_what_is_missing(tmp_path, x):
    model = create_model("wide_resnet_advlc", depth=10, widen_factor=1).eval()
    save_checkpoint(tmp_path / "model_e001.pt", model, epoch=1)
    loaded = load_model(tmp_path / "model_e001.pt")
    torch.testing.assert_close(_logits(loaded, x), _logits(model, x), rtol=0, atol=0)
    assert loaded.landscape_arch == {"name": "wide_resnet_advlc", "kwargs": {"depth": 10, "widen_factor": 1}}
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"bare\.pt: the file records no architecture; pass arch=\.\.\. "
                                              r"\(CLI: --arch\)$"):
        load_model(tmp_path / "bare.pt")
    torch.save({"state_dict": model.state_dict(), "arch": {"name": "gone_net", "kwargs": {}}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"records architecture 'gone_net', which is not registered here"):
        load_model(tmp_path / "old.pt")


# ------------------------------------------------------------------------------------ whole pickled models

#: A PreActResNet18 written as a user's own class: the AdvLC/Wong wiring (shortcut conv on the raw input), with
#: exactly the keys of ``preact_resnet18_rice``. Pickled whole, it must compute its own forward.
WHOLE_MODULE = textwrap.dedent('''
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

        def forward(self, x):
            out = F.relu(self.bn1(x))
            short = self.shortcut(x) if hasattr(self, "shortcut") else x
            return self.conv2(F.relu(self.bn2(self.conv1(out)))) + short

    class PreActNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            cin, layers = 64, []
            for i, cout in enumerate((64, 128, 256, 512)):
                blocks = [Block(cin, cout, 1 if i == 0 else 2), Block(cout, cout, 1)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
                cin = cout
            self.bn = nn.BatchNorm2d(512)
            self.linear = nn.Linear(512, 10)

        def forward(self, x):
            out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
            out = F.relu(self.bn(out))
            return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
''')


def whole_model(folder, monkeypatch, seed: int):
    """``(module, state dict)``: the class above with published-style weights, importable as ``whole_net``."""
    (folder / "whole_net.py").write_text(WHOLE_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "whole_net", raising=False)
    import whole_net

    module = whole_net.PreActNet()
    sd = pub.preact18_weights(seed)
    module.load_state_dict(sd)
    return module.eval(), sd


def test_a_trusted_whole_model_is_used_as_itself(tmp_path, x, monkeypatch, capsys):
    module, sd = whole_model(tmp_path, monkeypatch, 40)
    torch.save(module, tmp_path / "model.pt")
    want = pub.preact18_forward(sd, x, shortcut_on="raw")
    ckpt = load_checkpoint(tmp_path / "model.pt", trusted=True)
    assert ckpt.layout == "module" and type(ckpt.module).__name__ == "PreActNet"
    loaded = load_model(ckpt)
    assert loaded is ckpt.module and not loaded.training
    torch.testing.assert_close(_logits(loaded, x), want, **TOL)
    assert capsys.readouterr().err == ""
    # an arch beside it is only checked: the keys fit the Rice wiring, which would compute something else
    checked = load_model(tmp_path / "model.pt", "preact_resnet18_rice", trusted=True)
    torch.testing.assert_close(_logits(checked, x), want, **TOL)
    rice = pub.preact18_forward(sd, x, shortcut_on="preact")
    assert (rice - want).abs().max() > 1e-2
    err = capsys.readouterr().err
    assert "using it as itself (whole_net.PreActNet)" in err and "preact_resnet18_rice" in err
    assert "landscape.models.preact_resnet.PreActResNet is not used" in err
    with pytest.raises(CheckpointError, match=r"the pickled whole_net\.PreActNet does not fit family wide_resnet "
                                              r"\(tried wide_resnet_trades"):
        load_model(tmp_path / "model.pt", "wide_resnet", trusted=True)
    wrapped = load_model(tmp_path / "model.pt", trusted=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    torch.testing.assert_close(_logits(wrapped, x), pub.preact18_forward(sd, (x - 0.5) / 0.25, shortcut_on="raw"),
                               **TOL)


def test_a_whole_model_under_a_wrapper_key_and_its_own_record(tmp_path, x, monkeypatch):
    module, sd = whole_model(tmp_path, monkeypatch, 41)
    torch.save({"model": module, "epoch": 12}, tmp_path / "ckpt_12.pt")
    ckpt = load_checkpoint(tmp_path / "ckpt_12.pt", trusted=True)
    assert ckpt.layout == "module" and ckpt.epoch == 12 and ckpt.module is not None
    torch.testing.assert_close(_logits(load_model(ckpt), x), pub.preact18_forward(sd, x, shortcut_on="raw"), **TOL)
    own = create_model("preact_resnet18_advlc").eval()  # a model of this project pickled whole keeps its record
    torch.save(own, tmp_path / "own.pt")
    with pytest.raises(CheckpointError, match=r"records architecture preact_resnet18_advlc, not "
                                              r"preact_resnet18_rice"):
        load_model(tmp_path / "own.pt", "preact_resnet18_rice", trusted=True)
    assert load_model(tmp_path / "own.pt", "preact_resnet18", trusted=True).landscape_arch["name"] == \
        "preact_resnet18_advlc"
