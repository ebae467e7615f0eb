"""Files written the way the published training codes write them load into the same function they were trained in.

Each test writes a checkpoint in a published layout, loads it with ``load_model`` and compares the logits with an
independent implementation of the published network (``published.py``) to 1e-5. Where the keys alone cannot tell
two wirings apart, the loader must say on stderr which one it used; a load into another wiring without that
note is the failure this file exists to catch.
"""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from landscape.checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
from landscape.checkpoints import load as load_module
from landscape.models import create_model

from . import published as pub

TOL = dict(rtol=1e-5, atol=1e-5)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def _advlc_dict(sd, epoch=37):
    """The dict the AdvLC repo's train loop saves (``src/utils/train.py``)."""
    return {"epoch": epoch, "state_dict": sd, "best_acc1": 81.2, "best_pgd": 52.9, "best_fgsm": 57.0,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}}


def _with_prefix(sd, prefix="module."):
    return {prefix + k: v for k, v in sd.items()}


# ------------------------------------------------------------------------------------ PreActResNet18


def test_the_two_preact_wirings_really_differ(x):
    """Guards the tests below: with these weights the wirings give clearly different logits."""
    sd = pub.preact18_weights(0)
    raw = pub.preact18_forward(sd, x, shortcut_on="raw")
    pre = pub.preact18_forward(sd, x, shortcut_on="preact")
    assert (raw - pre).abs().max() > 1e-2


def test_advlc_repo_preact_file_gets_the_advlc_wiring_without_a_note(tmp_path, x, capsys):
    sd = pub.preact18_weights(1)
    torch.save(_advlc_dict(sd), tmp_path / "paresnet_pgd")
    model = load_model(tmp_path / "paresnet_pgd", "preact_resnet18")
    torch.testing.assert_close(_logits(model, x), pub.preact18_forward(sd, x, shortcut_on="raw"), **TOL)
    assert model.landscape_arch["name"] == "preact_resnet18_advlc"
    assert capsys.readouterr().err == ""
    ckpt = load_checkpoint(tmp_path / "paresnet_pgd")
    assert ckpt.layout == "advlc" and ckpt.epoch == 37 and ckpt.meta["best_pgd"] == 52.9


def test_rice_bare_state_dict_gets_the_rice_default_with_one_note(tmp_path, x, capsys):
    """Rice et al.'s model_{epoch}.pth: DataParallel state dict, keys that fit both wirings."""
    sd = pub.preact18_weights(2)
    for epoch in (0, 1):
        torch.save(_with_prefix(sd), tmp_path / f"model_{epoch}.pth")
    model = load_model(tmp_path / "model_0.pth", "preact_resnet18", mean=CIFAR_MEAN, std=CIFAR_STD)
    want = pub.normalized(lambda z: pub.preact18_forward(sd, z, shortcut_on="preact"), CIFAR_MEAN, CIFAR_STD)(x)
    torch.testing.assert_close(_logits(model, x), want, **TOL)
    err = capsys.readouterr().err
    assert err.count("landscape: note:") == 1
    assert "using preact_resnet18_rice" in err and "preact_resnet18_advlc" in err and "--arch" in err
    load_model(tmp_path / "model_1.pth", "preact_resnet18", mean=CIFAR_MEAN, std=CIFAR_STD)
    assert capsys.readouterr().err == ""  # same run folder: said once


def test_naming_the_exact_wiring_silences_the_note_and_is_exact(tmp_path, x, capsys):
    sd = pub.preact18_weights(3)
    torch.save(_with_prefix(sd), tmp_path / "model_5.pth")
    rice = load_model(tmp_path / "model_5.pth", "preact_resnet18_rice")
    advlc = load_model(tmp_path / "model_5.pth", "preact_resnet18_advlc")
    assert "fit several" not in capsys.readouterr().err
    torch.testing.assert_close(_logits(rice, x), pub.preact18_forward(sd, x, shortcut_on="preact"), **TOL)
    torch.testing.assert_close(_logits(advlc, x), pub.preact18_forward(sd, x, shortcut_on="raw"), **TOL)


def test_rice_model_best_layout_gets_the_rice_wiring(tmp_path, x, capsys):
    sd = pub.preact18_weights(4)
    torch.save({"state_dict": _with_prefix(sd), "test_robust_acc": 0.53, "test_robust_loss": 1.4,
                "test_loss": 0.7, "test_acc": 0.81}, tmp_path / "model_best.pth")
    model = load_model(tmp_path / "model_best.pth", "preact_resnet18", mean=CIFAR_MEAN, std=CIFAR_STD)
    want = pub.normalized(lambda z: pub.preact18_forward(sd, z, shortcut_on="preact"), CIFAR_MEAN, CIFAR_STD)(x)
    torch.testing.assert_close(_logits(model, x), want, **TOL)
    assert capsys.readouterr().err == ""


def test_normalisation_against_the_published_code_says_so(tmp_path, capsys):
    """The units trap: Rice et al. normalise in the script, the AdvLC repo feeds raw [0,1] images."""
    sd = pub.preact18_weights(14)
    (tmp_path / "advlc").mkdir()
    torch.save(_advlc_dict(sd), tmp_path / "advlc" / "ck_end")
    load_model(tmp_path / "advlc" / "ck_end", "preact_resnet18", mean=CIFAR_MEAN, std=CIFAR_STD)
    assert "preact_resnet18_advlc's published training code feeds raw [0,1] images" in capsys.readouterr().err
    (tmp_path / "rice").mkdir()
    torch.save(_with_prefix(sd), tmp_path / "rice" / "model_3.pth")
    load_model(tmp_path / "rice" / "model_3.pth", "preact_resnet18_rice")
    assert "normalises its inputs with the dataset mean/std" in capsys.readouterr().err
    load_model(tmp_path / "rice" / "model_3.pth", "preact_resnet18_rice", mean=CIFAR_MEAN, std=CIFAR_STD)
    load_model(tmp_path / "advlc" / "ck_end", "preact_resnet18")
    assert capsys.readouterr().err == ""


def test_exact_name_against_the_files_layout_says_so(tmp_path, capsys):
    torch.save(_advlc_dict(pub.preact18_weights(5)), tmp_path / "ck_end")
    model = load_model(tmp_path / "ck_end", "preact_resnet18_rice")
    assert model.landscape_arch["name"] == "preact_resnet18_rice"  # as asked ...
    err = capsys.readouterr().err
    assert "AdvLC repo's checkpoint layout belongs to preact_resnet18_advlc" in err  # ... but not silently


def test_every_family_load_is_exact_or_noted(tmp_path, x, capsys):
    """For each published PreAct layout: loading by family name either reproduces the training code's logits or
    prints a note naming the wiring used and the alternative."""
    sd = pub.preact18_weights(6)
    cases = {  # file -> the function the training code computed
        "advlc_dict": (_advlc_dict(sd), "raw"),
        "advlc_bare": (dict(sd), "raw"),  # AdvLC weights re-saved bare: keys cannot tell
        "rice_bare": (_with_prefix(sd), "preact"),
        "rice_best": ({"state_dict": _with_prefix(sd), "test_robust_acc": 0.5}, "preact"),
    }
    results = {}
    for name, (obj, trained_with) in cases.items():
        load_module._NOTES_SHOWN.clear()
        (tmp_path / name).mkdir()
        torch.save(obj, tmp_path / name / "ckpt.pt")
        got = _logits(load_model(tmp_path / name / "ckpt.pt", "preact_resnet18"), x)
        exact = torch.allclose(got, pub.preact18_forward(sd, x, shortcut_on=trained_with), **TOL)
        noted = "preact_resnet18_advlc" in capsys.readouterr().err
        results[name] = (exact, noted)
        assert exact or noted, name
    # the ambiguous file really gets the other function, and says so; the others are exact and quiet
    assert results == {"advlc_dict": (True, False), "advlc_bare": (False, True), "rice_bare": (True, True),
                       "rice_best": (True, False)}


def test_robustbench_wong2020fast_mu_sigma_and_no_final_bn(tmp_path, x, capsys):
    sd = pub.preact18_weights(7, final_bn=False)
    mu = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    sigma = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.save({**sd, "mu": mu, "sigma": sigma}, tmp_path / "Wong2020Fast.pt")
    model = load_model(tmp_path / "Wong2020Fast.pt", "preact_resnet18")  # inputs in [0,1]: no mean/std given
    want = pub.normalized(lambda z: pub.preact18_forward(sd, z, shortcut_on="raw", final_bn=False),
                          CIFAR_MEAN, CIFAR_STD)(x)
    torch.testing.assert_close(_logits(model, x), want, **TOL)
    assert model.model.landscape_arch["name"] == "preact_resnet18_robustbench"
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match=r"mu/sigma.*disagree"):
        load_model(tmp_path / "Wong2020Fast.pt", "preact_resnet18", mean=(0.5,) * 3, std=(0.5,) * 3)


def test_robustbench_last_best_wrapper(tmp_path, x, capsys):
    """RobustBench keeps {'last', 'best'} for e.g. Andriushchenko2020Understanding and loads 'last'."""
    last, best = pub.preact18_weights(8, final_bn=False), pub.preact18_weights(9, final_bn=False)
    torch.save({"last": last, "best": best}, tmp_path / "Andriushchenko2020Understanding.pt")
    path = tmp_path / "Andriushchenko2020Understanding.pt"
    model = load_model(path, "preact_resnet18")
    torch.testing.assert_close(_logits(model, x), pub.preact18_forward(last, x, shortcut_on="raw", final_bn=False),
                               **TOL)
    assert "using 'last'" in capsys.readouterr().err  # the default is named
    model = load_model(path, "preact_resnet18", entry="best")
    torch.testing.assert_close(_logits(model, x), pub.preact18_forward(best, x, shortcut_on="raw", final_bn=False),
                               **TOL)
    assert capsys.readouterr().err == ""
    assert load_checkpoint(path, entry="best").entry == "best"
    with pytest.raises(CheckpointError, match=r"has no 'best' entry"):
        torch.save(last, tmp_path / "plain.pt")
        load_checkpoint(tmp_path / "plain.pt", entry="best")


# ------------------------------------------------------------------------------------ Wide ResNets


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_advlc_repo_wide_resnet(tmp_path, x, activation, capsys):
    sd = pub.advlc_wrn_weights(10, depth=10, width=2)
    torch.save(_advlc_dict(sd), tmp_path / "wresnet_end")
    model = load_model(tmp_path / "wresnet_end", "wide_resnet", depth=10, widen_factor=2, activation=activation)
    want = pub.advlc_wrn_forward(sd, x, depth=10, activation=activation)
    torch.testing.assert_close(_logits(model, x), want, **TOL)
    assert model.landscape_arch["name"] == "wide_resnet_advlc" and capsys.readouterr().err == ""
    same = load_model(tmp_path / "wresnet_end", "wide_resnet_advlc", depth=10, width=2, activation=activation)
    torch.testing.assert_close(_logits(same, x), want, **TOL)  # the AdvLC repo's own argument name


def test_rice_wide_resnet_bare_with_module_prefix(tmp_path, x):
    sd = pub.trades_wrn_weights(11, depth=10, width=2)
    torch.save(_with_prefix(sd), tmp_path / "model_99.pth")
    model = load_model(tmp_path / "model_99.pth", "wide_resnet", depth=10, widen_factor=2)
    torch.testing.assert_close(_logits(model, x), pub.trades_wrn_forward(sd, x, depth=10), **TOL)


def test_trades_wide_resnet_with_sub_block1(tmp_path, x):
    sd = pub.trades_wrn_weights(12, depth=10, width=2, sub_block1=True)
    torch.save(sd, tmp_path / "model-wideres-epoch76.pt")
    model = load_model(tmp_path / "model-wideres-epoch76.pt", "wide_resnet", depth=10, widen_factor=2)
    torch.testing.assert_close(_logits(model, x), pub.trades_wrn_forward(sd, x, depth=10), **TOL)
    assert model.landscape_arch["kwargs"]["sub_block1"] is True


def test_robustbench_wide_resnet_without_last_bias(tmp_path, x):
    sd = pub.trades_wrn_weights(13, depth=10, width=1)
    del sd["fc.bias"]
    torch.save({"state_dict": sd}, tmp_path / "wrn.pt")
    model = load_model(tmp_path / "wrn.pt", "wide_resnet", depth=10, widen_factor=1)
    torch.testing.assert_close(_logits(model, x), pub.trades_wrn_forward(sd, x, depth=10), **TOL)


# ------------------------------------------------------------------------------------ records and own classes


def test_the_projects_own_files_record_their_wiring(tmp_path, x, capsys):
    model = create_model("preact_resnet18_advlc").eval()
    save_checkpoint(tmp_path / "model_e003.pt", model, epoch=3)
    sd = torch.load(tmp_path / "model_e003.pt", weights_only=True)
    assert sd["arch"] == {"name": "preact_resnet18_advlc", "kwargs": {}}
    loaded = load_model(tmp_path / "model_e003.pt", "preact_resnet18")  # the record decides, silently
    want = pub.preact18_forward(sd["state_dict"], x, shortcut_on="raw")
    torch.testing.assert_close(_logits(loaded, x), want, **TOL)
    assert capsys.readouterr().err == ""
    with pytest.raises(CheckpointError, match=r"records architecture preact_resnet18_advlc, not "
                                              r"preact_resnet18_rice"):
        load_model(tmp_path / "model_e003.pt", "preact_resnet18_rice")
    save_checkpoint(tmp_path / "wrn.safetensors", create_model("wide_resnet_advlc", depth=10, widen_factor=1), epoch=1)
    assert load_checkpoint(tmp_path / "wrn.safetensors").arch == {
        "name": "wide_resnet_advlc", "kwargs": {"depth": 10, "widen_factor": 1}}
    # the record's arguments fill in what the caller leaves out
    assert load_model(tmp_path / "wrn.safetensors", "wide_resnet").landscape_arch["kwargs"]["depth"] == 10


USER_MODULE = textwrap.dedent('''
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self, width=4, num_classes=10):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, width, 3), nn.Softplus(), nn.Flatten())
            self.head = nn.Linear(width * 30 * 30, num_classes)

        def forward(self, x):
            return self.head(self.body(x))
''')


def test_your_own_class_by_spec_class_factory_or_instance(tmp_path, x, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)  # another test's file of that name
    import my_models

    with torch.random.fork_rng():
        torch.manual_seed(0)
        reference = my_models.Net(width=5).eval()
    torch.save({"model_state_dict": reference.state_dict(), "epoch": 4}, tmp_path / "epoch_4.pt")
    want = _logits(reference, x)
    for arch in (f"{tmp_path}/my_models.py:Net", "my_models:Net", my_models.Net, lambda **kw: my_models.Net(**kw),
                 my_models.Net(width=5)):
        model = load_model(tmp_path / "epoch_4.pt", arch, **({} if isinstance(arch, torch.nn.Module) else
                                                              {"width": 5}))
        torch.testing.assert_close(_logits(model, x), want, **TOL)
    with pytest.raises(TypeError, match=r"already built Net; pass the class instead"):
        load_model(tmp_path / "epoch_4.pt", my_models.Net(width=5), width=5)
    with pytest.raises(CheckpointError, match=r"does not fit .*head\.weight"):
        load_model(tmp_path / "epoch_4.pt", my_models.Net, width=6)
    with pytest.raises(ValueError, match=r"my_models.py has no 'Nett' \(classes there: Net"):
        load_model(tmp_path / "epoch_4.pt", f"{tmp_path}/my_models.py:Nett")
    with pytest.raises(ValueError, match=r"file .*missing.py not found"):
        load_model(tmp_path / "epoch_4.pt", f"{tmp_path}/missing.py:Net")


def test_trusted_whole_model_with_unimportable_class_says_how_to_fix(tmp_path, monkeypatch):
    (tmp_path / "gone_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_models

    torch.save(gone_models.Net(), tmp_path / "whole.pt")
    monkeypatch.delitem(sys.modules, "gone_models")
    (tmp_path / "gone_models.py").unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "whole.pt", trusted=True)
    msg = str(err.value)
    assert "whole.pt: the pickled model's class cannot be imported (No module named 'gone_models')" in msg
    assert "PYTHONPATH" in msg and "--arch path/to/file.py:ClassName" in msg and "\n" not in msg
