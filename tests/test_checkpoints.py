"""Checkpoints: key-rewriting helpers one by one, every format and wrapper round-trips, clear errors."""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from landscape import LandscapeError
from landscape.checkpoints import (
    OFFICIAL_KEYS, Checkpoint, CheckpointError, load_checkpoint, load_model, load_state_dict, read_epoch,
    require_tensors, save_checkpoint, strip_prefix, strip_prefixes, unwrap_state_dict,
)
from landscape.models import Normalized, create_model, list_models

ARCH = ("small_cnn", dict(in_channels=1, num_classes=10, input_size=8, width=2))
TINY = {  # one small configuration per registered model
    "preact_resnet18": dict(num_classes=3, in_channels=1),
    "preact_resnet18_rice": dict(num_classes=3, in_channels=1),
    "preact_resnet18_advlc": dict(num_classes=3, in_channels=1),
    "preact_resnet18_robustbench": dict(num_classes=3, in_channels=1),
    "wide_resnet": dict(depth=10, widen_factor=1, num_classes=3, in_channels=1),
    "wide_resnet_trades": dict(depth=10, widen_factor=1, num_classes=3, in_channels=1, sub_block1=True),
    "wide_resnet_advlc": dict(depth=10, widen_factor=1, num_classes=3, in_channels=1, activation="softplus"),
    "small_cnn": dict(in_channels=1, num_classes=3, input_size=8, width=2),
    "mlp": dict(input_shape=(1, 8, 8), hidden=(8,), num_classes=3),
}


def _model(seed: int = 0, arch=ARCH) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_model(arch[0], **arch[1]).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _model()


def _outputs(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m(x)


# ---------------------------------------------------------------------------------------------- helpers

def test_unwrap_state_dict_each_wrapper_key():
    sd = {"a.weight": torch.ones(2)}
    for key in ("state_dict", "model_state_dict", "model", "net"):
        out, meta = unwrap_state_dict({key: sd, "epoch": 4, "best_pgd": 0.5, "optimizer": {"state": {}}})
        assert out == sd
        assert meta == {"epoch": 4, "best_pgd": 0.5}  # the optimizer dict is not a scalar


def test_unwrap_state_dict_nested_and_outer_meta_wins():
    sd = OrderedDict(w=torch.zeros(1))
    out, meta = unwrap_state_dict({"model": {"state_dict": sd, "epoch": 1, "arch": "x"}, "epoch": 7})
    assert out == sd and meta == {"epoch": 7, "arch": "x"}


def test_unwrap_state_dict_plain_dict_module_and_scalar_kinds():
    sd = {"w": torch.ones(1)}
    assert unwrap_state_dict(sd) == (sd, {})
    lin = nn.Linear(2, 1)
    out, _ = unwrap_state_dict({"model": lin, "epoch": torch.tensor(3), "acc": np.float64(0.25)})
    assert set(out) == {"weight", "bias"} and torch.equal(out["weight"], lin.weight)
    _, meta = unwrap_state_dict({"net": sd, "epoch": torch.tensor(3), "acc": np.float64(0.25)})
    assert meta == {"epoch": 3, "acc": 0.25} and type(meta["acc"]) is float


def test_unwrap_state_dict_priority_and_errors():
    a, b = {"a": torch.ones(1)}, {"b": torch.ones(1)}
    assert unwrap_state_dict({"model": b, "state_dict": a})[0] == a  # state_dict is tried first
    assert unwrap_state_dict({"model": "not a mapping", "w": torch.ones(1)})[0].keys() == {"model", "w"}
    with pytest.raises(ValueError, match="got list"):
        unwrap_state_dict([torch.ones(1)])
    deep = a
    for _ in range(7):
        deep = {"state_dict": deep}
    with pytest.raises(ValueError, match="nested more than 6"):
        unwrap_state_dict(deep)


def test_strip_prefix_only_when_every_key_has_it():
    sd = {"module.a": 1, "module.b.c": 2}
    assert strip_prefix(sd) == {"a": 1, "b.c": 2}
    assert strip_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}
    assert strip_prefix({}) == {}
    assert strip_prefix({"net.a": 1}, "net.") == {"a": 1}
    assert list(strip_prefix({"module.z": 1, "module.a": 2})) == ["z", "a"]  # order kept


def test_strip_prefixes_repeats_dataparallel_and_compile():
    sd = {"module._orig_mod.a": 1, "module._orig_mod.b": 2}
    assert strip_prefixes(sd) == {"a": 1, "b": 2}
    assert strip_prefixes({"_orig_mod.module.a": 1}) == {"a": 1}
    assert strip_prefixes({"model.a": 1}) == {"model.a": 1}


def test_require_tensors_names_offending_keys():
    assert require_tensors({"a": torch.ones(1)}).keys() == {"a"}
    with pytest.raises(ValueError, match=r"'b' \(str\), 'c' \(list\)"):
        require_tensors({"a": torch.ones(1), "b": "x", "c": [1]})
    with pytest.raises(ValueError, match="no tensors"):
        require_tensors({})
    p = nn.Parameter(torch.ones(2))
    assert not require_tensors({"p": p})["p"].requires_grad


def test_read_epoch():
    assert read_epoch({"epoch": 5}) == 5
    assert read_epoch({"epoch": "12"}) == 12
    assert read_epoch({"epoch": 3.0}) == 3
    assert read_epoch({"epoch": 3.5}) is None
    assert read_epoch({"epoch": True}) is None
    assert read_epoch({"epoch": "last"}) is None
    assert read_epoch({}) is None


# ---------------------------------------------------------------------------------------------- round trips

WRAPPERS = {
    "bare": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 11},
    "model_state_dict": lambda sd: {"model_state_dict": sd, "epoch": 11},
    "model": lambda sd: {"model": sd, "epoch": 11},
    "net": lambda sd: {"net": sd, "epoch": 11},
    "model/state_dict": lambda sd: {"model": {"state_dict": sd}, "epoch": 11},
    "advlc": lambda sd: {"epoch": 11, "state_dict": sd, "best_acc1": 0.8, "best_pgd": 0.5, "best_fgsm": 0.6,
                         "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}},
}
PREFIXES = ["", "module.", "module._orig_mod."]


@pytest.mark.parametrize("ext", [".pt", ".pth", ".tar", ".ckpt", ".bin"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_torch_formats_round_trip(tmp_path, model, x, wrapper, prefix, legacy, ext):
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    path = tmp_path / f"ckpt{ext}"
    torch.save(WRAPPERS[wrapper](sd), path, _use_new_zipfile_serialization=not legacy)
    ckpt = load_checkpoint(path)
    assert ckpt.format == ("torch-legacy" if legacy else "torch")
    assert ckpt.epoch == (None if wrapper == "bare" else 11)
    assert list(ckpt.state_dict) == list(model.state_dict())
    loaded = load_model(path, ARCH[0], **ARCH[1])
    assert torch.equal(_outputs(loaded, x), _outputs(model, x))


def test_safetensors_round_trip_with_epoch_metadata(tmp_path, model, x):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"module." + k: v.contiguous() for k, v in model.state_dict().items()}, path,
              metadata={"epoch": "42", "best_pgd": "0.5", "note": "hello"})
    ckpt = load_checkpoint(path)
    assert (ckpt.format, ckpt.epoch, ckpt.meta) == ("safetensors", 42, {"best_pgd": 0.5, "note": "hello"})
    assert torch.equal(_outputs(load_model(path, ARCH[0], **ARCH[1]), x), _outputs(model, x))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_read_without_running_code_equals_jit_load(tmp_path, model, x, how):
    path = tmp_path / "ts.pt"
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x)
    scripted.save(str(path))
    safe, trusted = load_checkpoint(path), load_checkpoint(path, trusted=True)
    assert safe.format == trusted.format == "torchscript"
    assert safe.state_dict.keys() == trusted.state_dict.keys() == model.state_dict().keys()
    for k, v in trusted.state_dict.items():
        assert torch.equal(safe.state_dict[k], v), k
    assert torch.equal(_outputs(load_model(path, ARCH[0], **ARCH[1]), x), _outputs(model, x))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_with_batchnorm_buffers(tmp_path):
    model = create_model("preact_resnet18", **TINY["preact_resnet18"])
    model.train()
    model(torch.rand(4, 1, 8, 8))  # move the running statistics away from their initial values
    model.eval()
    path = tmp_path / "ts.pt"
    torch.jit.script(model).save(str(path))
    sd = load_state_dict(path)
    assert sd.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(sd[k], v), k


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_round_trips(tmp_path, name):
    if name not in TINY:
        pytest.fail(f"model {name!r} has no tiny configuration in tests/test_checkpoints.py TINY")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model(name, **TINY[name])
        model.train()
        model(torch.rand(4, 1, 8, 8))  # non-trivial batch-norm statistics where there are any
    model.eval()
    xx = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    save_checkpoint(tmp_path / "m.pt", model, epoch=2)
    save_checkpoint(tmp_path / "m.safetensors", model, epoch=2)
    for path in (tmp_path / "m.pt", tmp_path / "m.safetensors"):
        loaded = load_model(path, name, **TINY[name])
        assert not loaded.training
        assert torch.equal(_outputs(loaded, xx), _outputs(model, xx))


def test_numpy_scalars_in_checkpoint_load_safely(tmp_path):
    path = tmp_path / "np.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": np.int64(8), "best_pgd": np.float64(0.375),
                "curve": np.arange(3.0)}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 8 and ckpt.meta == {"best_pgd": 0.375}


# ---------------------------------------------------------------------------------------------- saving

def test_save_checkpoint_writes_official_advlc_dict(tmp_path, model, x):
    trained = _model()
    opt = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9)
    trained(x).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "sub" / "model_e007.pt", trained, epoch=7, optimizer=opt,
                           best_acc1=0.9, best_pgd=np.float64(0.5), note="x")
    raw = torch.load(path, weights_only=True)  # loadable without trusting it
    assert list(raw)[:6] == list(OFFICIAL_KEYS) and raw["note"] == "x"
    assert raw["epoch"] == 7 and raw["best_acc1"] == 0.9 and raw["best_pgd"] == 0.5 and raw["best_fgsm"] is None
    fresh = _model()
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.5)
    fresh_opt.load_state_dict(raw["optimizer"])
    for p_old, p_new in zip(trained.parameters(), fresh.parameters()):
        assert torch.equal(opt.state[p_old]["momentum_buffer"], fresh_opt.state[p_new]["momentum_buffer"])
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 7 and ckpt.meta == {"best_acc1": 0.9, "best_pgd": 0.5, "note": "x"}
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in trained.state_dict().items())
    assert [p.name for p in path.parent.iterdir()] == ["model_e007.pt"]  # no temporary files left


def test_save_checkpoint_is_atomic_when_writing_fails(tmp_path, model, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", model, epoch=1)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, epoch=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_save_checkpoint_validates_arguments(tmp_path, model):
    with pytest.raises(TypeError, match="epoch must be an int"):
        save_checkpoint(tmp_path / "m.pt", model, epoch=1.5)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        save_checkpoint(tmp_path / "m.pt", model, epoch=-1)
    with pytest.raises(TypeError, match="nn.Module"):
        save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(1)}, epoch=1)
    with pytest.raises(TypeError, match="scheduler has type object"):
        save_checkpoint(tmp_path / "m.pt", model, epoch=1, scheduler=object())
    with pytest.raises(ValueError, match="only scalar extras fit in safetensors"):
        save_checkpoint(tmp_path / "m.safetensors", model, epoch=1, optimizer={"state": {}})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- Normalized

def test_normalized_checkpoint_loads_into_normalized_automatically(tmp_path, model, x):
    wrapped = Normalized(model, (0.3,), (0.4,))
    path = save_checkpoint(tmp_path / "n.pt", wrapped, epoch=0)
    loaded = load_model(path, ARCH[0], **ARCH[1])
    assert isinstance(loaded, Normalized) and loaded.mean.item() == pytest.approx(0.3)
    assert torch.equal(_outputs(loaded, x), _outputs(wrapped, x))
    assert torch.equal(_outputs(load_model(path, ARCH[0], mean=(0.3,), std=(0.4,), **ARCH[1]), x),
                       _outputs(wrapped, x))
    with pytest.raises(ValueError, match=r"stores mean=\[0.3.*disagree"):
        load_model(path, ARCH[0], mean=(0.5,), std=(0.4,), **ARCH[1])


def test_mean_std_wrap_a_plain_checkpoint(tmp_path, model, x):
    path = save_checkpoint(tmp_path / "p.pt", model, epoch=0)
    loaded = load_model(path, ARCH[0], mean=(0.3,), std=(0.4,), **ARCH[1])
    assert isinstance(loaded, Normalized)
    assert torch.equal(_outputs(loaded, x), _outputs(model, (x - 0.3) / 0.4))
    with pytest.raises(ValueError, match="both mean and std"):
        load_model(path, ARCH[0], mean=(0.3,), **ARCH[1])


# ---------------------------------------------------------------------------------------------- errors

def test_missing_directory_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: checkpoint file is empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello world")
    with pytest.raises(CheckpointError, match=r"text\.pt: not a recognised checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(TypeError, match="path"):
        load_checkpoint(3)
    assert issubclass(CheckpointError, LandscapeError)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_truncated_file_names_the_file(tmp_path, model, fmt):
    path = tmp_path / ("m.safetensors" if fmt == "safetensors" else "m.pt")
    if fmt == "safetensors":
        save_checkpoint(path, model, epoch=1)
    else:
        torch.save({"state_dict": model.state_dict()}, path, _use_new_zipfile_serialization=fmt == "zip")
    data = path.read_bytes()
    cut = tmp_path / f"cut{path.suffix}"
    for keep in (len(data) // 3, len(data) - 10):
        cut.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match=rf"cut{path.suffix}: .*(truncated|corrupt)"):
            load_checkpoint(cut)


def test_wrong_architecture_lists_keys(tmp_path, model):
    path = tmp_path / "cnn.pt"
    torch.save(model.state_dict(), path)  # no architecture record: the keys are compared
    with pytest.raises(CheckpointError) as err:
        load_model(path, "mlp", input_shape=(1, 8, 8), hidden=(4,))
    msg = str(err.value)
    assert "cnn.pt" in msg and "mlp" in msg and "\n" not in msg
    assert "4 missing keys: net.1.weight, net.1.bias, net.3.weight (+1 more)" in msg
    assert "8 unexpected keys: features.0.weight" in msg


def test_a_recorded_architecture_contradicting_the_request_is_an_error(tmp_path, model):
    path = save_checkpoint(tmp_path / "cnn.pt", model, epoch=1)
    assert load_checkpoint(path).arch == {"name": "small_cnn", "kwargs": ARCH[1]}
    with pytest.raises(CheckpointError, match=r"cnn\.pt: the file records architecture small_cnn, not mlp; "
                                              r"pass --arch small_cnn"):
        load_model(path, "mlp", input_shape=(1, 8, 8), hidden=(4,))


def test_wrong_num_classes_is_a_shape_mismatch_with_hint(tmp_path, model):
    path = save_checkpoint(tmp_path / "c10.pt", model, epoch=1)
    kwargs = dict(ARCH[1], num_classes=100)
    with pytest.raises(CheckpointError, match=r"c10\.pt: .*classifier\.3\.weight checkpoint \[10, 128\] vs model "
                                              r"\[100, 128\].*pass num_classes=10"):
        load_model(path, ARCH[0], **kwargs)
    kwargs = dict(ARCH[1], in_channels=3)
    with pytest.raises(CheckpointError, match=r"features\.0\.weight checkpoint \[2, 1, 3, 3\].*in_channels=1"):
        load_model(path, ARCH[0], **kwargs)


def test_non_tensor_entries_are_refused(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": {"w": torch.ones(1), "note": "text", "list": [1, 2]}}, path)
    with pytest.raises(CheckpointError, match=r"odd\.pt: state dict entries are not tensors: 'note' \(str\)"):
        load_checkpoint(path)


def test_load_model_validates_before_reading(tmp_path):
    with pytest.raises(ValueError, match="did you mean small_cnn"):
        load_model(tmp_path / "missing.pt", "small_cnm")
    with pytest.raises(ValueError, match="invalid device"):
        load_model(tmp_path / "missing.pt", "mlp", device="gpu9")


def test_old_batchnorm_checkpoint_without_num_batches_tracked(tmp_path):
    model = create_model("preact_resnet18", **TINY["preact_resnet18"]).eval()
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt", "preact_resnet18", **TINY["preact_resnet18"])
    xx = torch.rand(2, 1, 8, 8)
    assert torch.equal(_outputs(loaded, xx), _outputs(model, xx))


def test_checkpoint_repr_is_short(tmp_path, model):
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model, epoch=3))
    assert isinstance(ckpt, Checkpoint) and "tensor" not in repr(ckpt) and "epoch=3" in repr(ckpt)
    assert ckpt.path == Path(tmp_path / "m.pt")
    assert os.fspath(ckpt.path).endswith("m.pt")


def test_load_model_takes_an_already_loaded_checkpoint(tmp_path):
    from landscape.checkpoints import load_checkpoint, load_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("mlp", hidden=(8,)).eval()
    path = save_checkpoint(tmp_path / "e3.pt", model, epoch=3) or tmp_path / "e3.pt"
    ckpt = load_checkpoint(path)
    path.unlink()  # the Checkpoint must not be read from disk again
    loaded = load_model(ckpt, "mlp", hidden=(8,))
    x = torch.rand(4, 1, 8, 8)
    assert ckpt.epoch == 3
    assert torch.equal(loaded(x), model(x))


# ---------------------------------------------------------------------------------------------- layouts and wirings


def test_select_entry_last_best():
    from landscape.checkpoints.keys import select_entry

    last, best = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    assert select_entry({"last": last, "best": best}) == (last, "last")
    assert select_entry({"last": last, "best": best}, "best") == (best, "best")
    assert select_entry({"best": best}) == (best, "best")
    assert select_entry(last) == (last, None)
    with pytest.raises(ValueError, match="has no 'best' entry"):
        select_entry(last, "best")
    with pytest.raises(ValueError, match="entry must be one of last, best"):
        select_entry(last, "final")


def test_layout_of_each_training_code():
    from landscape.checkpoints.keys import layout_of

    sd = {"w": torch.zeros(1)}
    assert layout_of({"epoch": 1, "state_dict": sd, "best_acc1": 0, "best_pgd": 0, "best_fgsm": 0,
                      "optimizer": {}}) == "advlc"
    assert layout_of({"epoch": 1, "state_dict": sd, "best_acc1": 0, "best_pgd": 0, "best_fgsm": 0, "optimizer": {},
                      "arch": {"name": "mlp", "kwargs": {}}}) == "landscape"
    assert layout_of({"state_dict": sd, "test_robust_acc": 0.5}) == "rice"
    assert layout_of(sd) == "bare"
    assert layout_of({"model_state_dict": sd, "epoch": 3}) == "wrapped"
    assert layout_of(nn.Linear(1, 1)) == "module"


def test_arch_record_from_dict_or_json_and_malformed_ignored():
    from landscape.checkpoints.keys import arch_record

    rec = {"name": "mlp", "kwargs": {"hidden": [4]}}
    assert arch_record({"arch": rec}) == rec
    assert arch_record({"arch": '{"name": "mlp", "kwargs": {"hidden": [4]}}'}) == rec
    assert arch_record({"arch": {"name": "mlp"}}) == {"name": "mlp", "kwargs": {}}
    for bad in ("not json", {"name": 3}, {"name": "mlp", "kwargs": [1]}, None):
        assert arch_record({"arch": bad}) is None
    assert arch_record([1]) is None


def test_split_normalization_both_layouts():
    from landscape.checkpoints.keys import split_normalization

    w = torch.ones(2)
    out, mean, std, names = split_normalization({"mean": torch.zeros(1, 3, 1, 1), "std": torch.ones(1, 3, 1, 1),
                                                 "model.fc.weight": w})
    assert out == {"fc.weight": w} and mean.shape == (3,) and names == "mean/std"
    out, mean, std, names = split_normalization({"mu": torch.full((1, 3, 1, 1), 0.5), "sigma": torch.ones(1, 3, 1, 1),
                                                 "fc.weight": w})
    assert out == {"fc.weight": w} and mean.tolist() == [0.5] * 3 and names == "mu/sigma"
    # a model that owns such buffers keeps them; mean/std next to non-model.* keys are ordinary weights
    sd = {"mu": torch.zeros(3), "sigma": torch.ones(3), "fc.weight": w}
    assert split_normalization(sd, ["mu", "sigma", "fc.weight"])[3] is None
    assert split_normalization({"mean": torch.zeros(3), "std": torch.ones(3), "fc.weight": w})[3] is None


@pytest.mark.parametrize("requested, keys, layout, record, want, noted", [
    ("preact_resnet18", ["bn.weight", "linear.weight"], "advlc", None, "preact_resnet18_advlc", False),
    ("preact_resnet18", ["bn.weight", "linear.weight"], "rice", None, "preact_resnet18_rice", False),
    ("preact_resnet18", ["bn.weight", "linear.weight"], "bare", None, "preact_resnet18_rice", True),
    ("preact_resnet18", ["linear.weight"], "bare", None, "preact_resnet18_robustbench", False),
    ("preact_resnet18", ["bn.weight"], "landscape", {"name": "preact_resnet18_advlc", "kwargs": {}},
     "preact_resnet18_advlc", False),
    ("preact_resnet18_rice", ["bn.weight", "linear.weight"], "advlc", None, "preact_resnet18_rice", True),
    ("preact_resnet18_advlc", ["bn.weight", "linear.weight"], "bare", None, "preact_resnet18_advlc", False),
    ("wide_resnet", ["layer1.block0.bn1.weight"], "advlc", None, "wide_resnet_advlc", False),
    ("wide_resnet", ["block1.layer.0.bn1.weight"], "bare", None, "wide_resnet_trades", False),
    ("mlp", ["net.1.weight"], "landscape", {"name": "some_old_name", "kwargs": {}}, "mlp", False),
    ("x.py:Net", ["a"], "landscape", {"name": "mlp", "kwargs": {}}, "x.py:Net", False),
])
def test_infer_wiring_rules(requested, keys, layout, record, want, noted):
    from landscape.checkpoints.keys import infer_wiring

    wiring = infer_wiring(requested, keys, layout, record)
    assert wiring.name == want and (wiring.note is not None) == noted


def test_infer_wiring_kwargs_and_contradictions():
    from landscape.checkpoints.keys import infer_wiring

    w = infer_wiring("wide_resnet", ["block1.layer.0.bn1.weight", "sub_block1.layer.0.bn1.weight", "fc.weight"],
                     "bare", None)
    assert w.kwargs == {"sub_block1": True, "bias_last": False}
    w = infer_wiring("wide_resnet", [], "landscape", {"name": "wide_resnet_advlc", "kwargs": {"depth": 16}})
    assert (w.name, w.kwargs) == ("wide_resnet_advlc", {"depth": 16})
    with pytest.raises(ValueError, match="records architecture mlp, not preact_resnet18"):
        infer_wiring("preact_resnet18", [], "landscape", {"name": "mlp", "kwargs": {}})
    with pytest.raises(ValueError, match="unknown architecture"):
        infer_wiring("preact_resnet", [], "bare", None)
