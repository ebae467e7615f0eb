"""Deciding a wiring by evidence, and one wiring per trajectory run.

A throw-away family registered here, ``tiny_shortcut``, has two wirings with identical keys and shapes that differ
only in what the 1x1 shortcut conv of each block sees (the block's pre-activated input or its raw input), like
``preact_resnet18_rice`` / ``_advlc``. Its residual branch is a one-channel bottleneck, so the shortcut carries the
signal and weights trained in one wiring classify poorly in the other. Each wiring is trained on the bundled
digits for 300 small steps (about a second), saved as a bare state dict, and must be told apart by its clean
accuracy on 128 test digits; untrained weights must not be.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape.checkpoints import CheckpointError, load_model
from landscape.checkpoints import load as load_module
from landscape.checkpoints.evidence import clearly_better, mcnemar_p, pick
from landscape.checkpoints.record import WiringError
from landscape.datasets import load_dataset
from landscape.models import register_family, register_model, unregister
from landscape.trajectory import analyse_trajectory

FAMILY, PRE, RAW = "tiny_shortcut", "tiny_shortcut_preact", "tiny_shortcut_raw"


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, shortcut_input: str):
        super().__init__()
        self.shortcut_input = shortcut_input
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 1, 3, 2, 1, bias=False)  # a one-channel residual branch
        self.bn2 = nn.BatchNorm2d(1)
        self.conv2 = nn.Conv2d(1, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, 2, bias=False)

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        short = self.shortcut(pre if self.shortcut_input == "preact" else x)
        return self.conv2(F.relu(self.bn2(self.conv1(pre)))) + short


class TinyShortcut(nn.Module):
    """(B, 1, 8, 8) digits -> 10 logits; two down-sampling blocks."""

    def __init__(self, shortcut_input: str, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, 1, 1, bias=False)
        self.layers = nn.Sequential(_Block(8, 16, shortcut_input), _Block(16, 32, shortcut_input))
        self.bn = nn.BatchNorm2d(32)
        self.linear = nn.Linear(32, num_classes)

    def forward(self, x):
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@pytest.fixture(scope="module", autouse=True)
def tiny_family():
    def tiny_shortcut_preact(num_classes: int = 10, in_channels: int = 1):
        return TinyShortcut("preact", num_classes, in_channels)

    def tiny_shortcut_raw(num_classes: int = 10, in_channels: int = 1):
        return TinyShortcut("raw", num_classes, in_channels)

    register_model(tiny_shortcut_preact, family=FAMILY, source="test: shortcut on relu(bn1(x))")
    register_model(tiny_shortcut_raw, family=FAMILY, source="test: shortcut on x")
    register_family(FAMILY, default=PRE, infer=lambda keys, layout: (PRE, {}, True),
                    hint="--arch tiny_shortcut_raw for the other")
    yield
    unregister(FAMILY)


@pytest.fixture(autouse=True)
def fresh_notes(monkeypatch):
    monkeypatch.setattr(load_module, "_NOTES_SHOWN", set())


@pytest.fixture(scope="module")
def digits():
    x, y = load_dataset("digits", "train")
    xt, yt = load_dataset("digits", "test")
    return x, y, xt[:128], yt[:128]


def _train(shortcut_input: str, x, y, steps: int = 300, seed: int = 0) -> TinyShortcut:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyShortcut(shortcut_input)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (128,), generator=g)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(digits):
    x, y, _, _ = digits
    return {"preact": _train("preact", x, y), "raw": _train("raw", x, y)}


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _as_wiring(model: TinyShortcut, shortcut_input: str) -> TinyShortcut:
    other = TinyShortcut(shortcut_input)
    other.load_state_dict(model.state_dict())
    return other.eval()


# ---------------------------------------------------------------------------------------------- the rule


def test_clearly_better_rule_in_numbers():
    n = 128
    a = torch.zeros(n, dtype=torch.bool)
    a[:20] = True
    assert clearly_better(a, torch.zeros(n, dtype=torch.bool))  # 15.6 points, 20 samples, p = 2^-20
    a12 = torch.zeros(n, dtype=torch.bool)
    a12[:12] = True
    assert not clearly_better(a12, torch.zeros(n, dtype=torch.bool))  # 12 samples but 9.4 points
    small = torch.tensor([True] * 3 + [False] * 7)
    assert not clearly_better(small, torch.zeros(10, dtype=torch.bool))  # 30 points, but p = 0.125
    assert mcnemar_p(3, 0) == 0.125 and mcnemar_p(0, 0) == 1.0
    assert abs(mcnemar_p(10, 2) - 0.019287109375) < 1e-12
    b = torch.zeros(n, dtype=torch.bool)
    b[:15] = True
    assert pick({"x": a, "y": b}) is None  # 5 samples apart
    assert pick({"x": a, "y": torch.zeros(n, dtype=torch.bool)}) == "x"


# ---------------------------------------------------------------------------------------------- load_model


@pytest.mark.parametrize("wiring, name, other", [("preact", PRE, RAW), ("raw", RAW, PRE)])
def test_evidence_picks_the_wiring_each_file_was_trained_in(tmp_path, digits, trained, wiring, name, other, capsys):
    _, _, xe, ye = digits
    model = trained[wiring]
    right = _accuracy(model, xe, ye)
    wrong = _accuracy(_as_wiring(model, "raw" if wiring == "preact" else "preact"), xe, ye)
    assert right >= 0.85 and wrong <= right - 0.3, (right, wrong)  # what the rule has to tell apart
    torch.save(model.state_dict(), tmp_path / "model_9.pth")  # bare: the keys cannot tell
    loaded = load_model(tmp_path / "model_9.pth", FAMILY, evidence=(xe, ye))
    assert loaded.landscape_arch["name"] == name
    with torch.no_grad():
        torch.testing.assert_close(loaded(xe), model(xe), rtol=0, atol=0)
    err = capsys.readouterr().err
    assert err.count("landscape: note:") == 1
    assert (f"{name} {round(right * 128)}/128 ({100 * right:.1f}%), {other} {round(wrong * 128)}/128 "
            f"({100 * wrong:.1f}%): using {name}") in err


def test_untrained_weights_keep_the_default_and_its_note(tmp_path, digits, capsys):
    _, _, xe, ye = digits
    with torch.random.fork_rng():
        torch.manual_seed(3)
        torch.save(TinyShortcut("raw").state_dict(), tmp_path / "model_0.pth")
    loaded = load_model(tmp_path / "model_0.pth", FAMILY, evidence=(xe, ye))
    assert loaded.landscape_arch["name"] == PRE
    err = capsys.readouterr().err
    assert "using tiny_shortcut_preact" in err and "neither is clearly better" in err
    assert f"{RAW} " in err and "/128 (" in err
    load_model(tmp_path / "model_0.pth", FAMILY)  # no evidence: today's default and note
    assert capsys.readouterr().err == ""  # said once for the folder


def test_evidence_is_checked_when_used(tmp_path, digits, trained):
    _, _, xe, ye = digits
    torch.save(trained["raw"].state_dict(), tmp_path / "m.pth")
    with pytest.raises(ValueError, match=r"evidence x must be inputs in \[0,1\]"):
        load_model(tmp_path / "m.pth", FAMILY, evidence=(xe * 255, ye))
    with pytest.raises(TypeError, match="evidence must be a pair"):
        load_model(tmp_path / "m.pth", FAMILY, evidence=xe)
    load_model(tmp_path / "m.pth", RAW, evidence=xe)  # an exact name never needs it


def test_evidence_is_lazy_and_leaves_the_rng_as_a_plain_load_does(tmp_path, digits):
    """Weighing evidence builds extra candidates without moving the caller's RNG; a callable is only called when
    the keys fit several wirings."""
    _, _, xe, ye = digits
    torch.save(TinyShortcut("raw").state_dict(), tmp_path / "model_0.pth")
    calls = []

    def lazy():
        calls.append(1)
        return xe, ye

    torch.manual_seed(11)
    load_model(tmp_path / "model_0.pth", FAMILY)
    plain = torch.get_rng_state()
    torch.manual_seed(11)
    load_model(tmp_path / "model_0.pth", FAMILY, evidence=lazy)
    assert torch.equal(torch.get_rng_state(), plain) and calls == [1]
    load_model(tmp_path / "model_0.pth", RAW, evidence=lazy)  # an exact name: the evidence is never decoded
    assert calls == [1]


# ---------------------------------------------------------------------------------------------- trajectories

TRAJ = {"n": 32, "steps": 1, "eps": 0.1, "measures": ["grad"], "batch_size": 64, "splits": ["test"],
        "progress": False, "retry_delay": 0.01}


def test_a_run_of_bare_files_is_decided_by_evidence_once(tmp_path, digits, trained, capsys):
    x, y, _, _ = digits
    xt, yt = load_dataset("digits", "test")
    run = tmp_path / "run"
    run.mkdir()
    early = _train("raw", x, y, steps=5)  # barely trained: no evidence in it
    torch.save(early.state_dict(), run / "model_1.pth")
    torch.save(trained["raw"].state_dict(), run / "model_2.pth")
    table = analyse_trajectory(run, FAMILY, data=(xt, yt), out_dir=tmp_path / "out", **{**TRAJ, "n": None})
    assert table["error"].isna().all()
    assert table["arch"].tolist() == [RAW, RAW]
    err = capsys.readouterr().err
    assert err.count("using tiny_shortcut_raw") == 1 and "model_2.pth" in err  # the last file decided
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert settings["settings"]["arch"] == RAW and settings["wiring"]["arch"] == RAW
    acc = table.set_index("epoch")["acc_clean"]  # every test digit, measured in the decided wiring
    assert acc[2] == pytest.approx(_accuracy(trained["raw"], xt, yt), abs=1e-6)
    assert acc[2] - _accuracy(_as_wiring(trained["raw"], "preact"), xt, yt) > 0.3


def test_files_that_need_different_wirings_are_one_error(tmp_path):
    from tests.compat import published as pub

    run = tmp_path / "run"
    run.mkdir()
    sd = pub.preact18_weights(1)
    torch.save({"epoch": 3, "state_dict": sd, "best_acc1": 1, "best_pgd": 1, "best_fgsm": 1, "optimizer": {}},
               run / "a_e3.pt")
    torch.save(pub.preact18_weights(2, final_bn=False), run / "b_e4.pt")  # RobustBench's: no final bn
    with pytest.raises(WiringError) as exc:
        analyse_trajectory(run, "preact_resnet18", data=(torch.rand(4, 3, 32, 32), torch.arange(4)),
                           out_dir=tmp_path / "out", **{**TRAJ, "n": 4})
    msg = str(exc.value)
    assert "need different wirings" in msg and "preact_resnet18_advlc: a_e3.pt" in msg
    assert "preact_resnet18_robustbench: b_e4.pt" in msg and "\n" not in msg
    assert isinstance(exc.value, CheckpointError)


# ---------------------------------------------------------------------------------------------- headers


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit
def test_read_header_agrees_with_load_checkpoint_without_reading_weights(tmp_path):
    from landscape.checkpoints import load_checkpoint, save_checkpoint
    from landscape.checkpoints.header import read_header
    from landscape.models import create_model

    model = create_model("preact_resnet18_advlc", num_classes=4, in_channels=1)
    sd = model.state_dict()
    files = {
        "a_end": {"epoch": 3, "state_dict": sd, "best_acc1": 1.0, "best_pgd": 2.0, "best_fgsm": 0.0,
                  "optimizer": {}},
        "a_swa_end": {"state_dict": sd, "num": 4, "best_acc": 1.0, "best_pgd": 2.0, "best_fgm": 3.0},
        "model_3.pth": {f"module.{k}": v for k, v in sd.items()},
        "model_best.pth": {"state_dict": sd, "test_robust_acc": 0.4},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
    torch.save(files["model_3.pth"], tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_checkpoint(tmp_path / "own.pt", model, epoch=5)
    save_checkpoint(tmp_path / "own.safetensors", model, epoch=6)
    torch.jit.save(torch.jit.script(nn.Linear(2, 3)), tmp_path / "script.pt")
    layouts = {}
    for path in sorted(tmp_path.iterdir()):
        header, ckpt = read_header(path), load_checkpoint(path)
        assert header.shapes == {k: tuple(v.shape) for k, v in ckpt.state_dict.items()}, path.name
        assert (header.layout, header.arch, header.epoch) == (ckpt.layout, ckpt.arch, ckpt.epoch), path.name
        layouts[path.name] = header.layout
    assert layouts == {"a_end": "advlc", "a_swa_end": "advlc_swa", "legacy.pth": "bare", "model_3.pth": "bare",
                       "model_best.pth": "rice", "own.pt": "landscape", "own.safetensors": "bare",
                       "script.pt": "bare"}
    torch.save({"model": nn.Linear(2, 3), "epoch": 1}, tmp_path / "whole.pt")
    assert read_header(tmp_path / "whole.pt").module_class == "torch.nn.modules.linear.Linear"
    marker = tmp_path / "ran"
    torch.save({"state_dict": sd, "x": _Evil(marker)}, tmp_path / "evil.pt")
    read_header(tmp_path / "evil.pt")  # read, never run
    assert not marker.exists()


def test_read_header_checks_a_safetensors_header_as_the_loader_does(tmp_path):
    """A header that is not a JSON object, or declares more tensor bytes than the file holds, is the loader's
    one-line CheckpointError, not a crash or an allocation."""
    import struct

    from landscape.checkpoints.header import read_header

    big = b'{"w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}}'
    for name, header in (("list.safetensors", b"[1, 2]"), ("big.safetensors", big)):
        path = tmp_path / name
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
        with pytest.raises(CheckpointError, match=name):
            read_header(path)
