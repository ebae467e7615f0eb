"""Model registry: every registered model builds, runs and names its layers like the published code."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from landscape.models import Normalized, create_model, list_models, register_model

# Tiny configuration and input shape for every registered model (timm-style: new models must add one).
TINY = {
    "preact_resnet18": (dict(num_classes=7, in_channels=1), (2, 1, 8, 8)),
    "preact_resnet18_rice": (dict(num_classes=7, in_channels=1), (2, 1, 8, 8)),
    "preact_resnet18_advlc": (dict(num_classes=7, in_channels=1), (2, 1, 8, 8)),
    "preact_resnet18_robustbench": (dict(num_classes=7, in_channels=1), (2, 1, 8, 8)),
    "wide_resnet": (dict(depth=10, widen_factor=1, num_classes=7), (2, 3, 8, 8)),
    "wide_resnet_trades": (dict(depth=10, widen_factor=1, num_classes=7, sub_block1=True), (2, 3, 8, 8)),
    "wide_resnet_advlc": (dict(depth=10, widen_factor=1, num_classes=7, activation="softplus"), (2, 3, 8, 8)),
    "small_cnn": (dict(in_channels=3, num_classes=7, input_size=8, width=4), (2, 3, 8, 8)),
    "mlp": (dict(input_shape=(1, 8, 8), hidden=(8, 8), num_classes=7), (2, 1, 8, 8)),
}


def _tiny(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    if name not in TINY:
        pytest.fail(f"model {name!r} is registered but has no tiny configuration in tests/test_models.py TINY")
    kwargs, shape = TINY[name]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_model(name, **kwargs), shape


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_finite(name):
    model, shape = _tiny(name)
    model.eval()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (shape[0], 7)
    assert torch.isfinite(out).all()
    # samples are independent in eval mode: the first row alone gives the same logits
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1]), out[:1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list_models())
def test_state_dict_round_trip_reproduces_outputs(name):
    model, shape = _tiny(name)
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(99)
        other = create_model(name, **TINY[name][0]).eval()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert not torch.equal(other(x), model(x))
        other.load_state_dict(model.state_dict())
        assert torch.equal(other(x), model(x))


def _published_preact_resnet18_keys() -> set[str]:
    """Keys of PreActResNet18 as in Rice et al.'s / AdvLC's preactresnet.py, written out by hand."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "linear.weight", "linear.bias"} | {f"bn.{s}" for s in bn}
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            keys |= {f"{p}.bn1.{s}" for s in bn} | {f"{p}.bn2.{s}" for s in bn}
            keys |= {f"{p}.conv1.weight", f"{p}.conv2.weight"}
            if layer > 1 and block == 0:
                keys.add(f"{p}.shortcut.0.weight")
    return keys


def _published_wrn_keys(depth: int) -> set[str]:
    """Keys of WideResNet as in TRADES / Rice et al. / RobustBench wideresnet.py, written out by hand."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    n = (depth - 4) // 6
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{s}" for s in bn}
    for b in range(1, 4):
        for i in range(n):
            p = f"block{b}.layer.{i}"
            keys |= {f"{p}.bn1.{s}" for s in bn} | {f"{p}.bn2.{s}" for s in bn}
            keys |= {f"{p}.conv1.weight", f"{p}.conv2.weight"}
            if i == 0:  # widths change at the first layer of every block (16 -> 160 too)
                keys.add(f"{p}.convShortcut.weight")
    return keys


def _preact_resnet18_param_count(num_classes: int = 10, in_channels: int = 3) -> int:
    """Parameter count from the architecture's definition: 3x3 convs, 1x1 shortcuts, BN (2 per channel)."""
    total = in_channels * 64 * 9
    in_planes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for s in (stride, 1):
            total += 2 * in_planes + in_planes * planes * 9 + 2 * planes + planes * planes * 9
            if s != 1 or in_planes != planes:
                total += in_planes * planes
            in_planes = planes
    return total + 2 * 512 + 512 * num_classes + num_classes


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):  # shapes and names only, no memory, no init time
        return create_model(name, **kwargs)


def test_preact_resnet18_keys_and_size_match_published():
    model = _meta("preact_resnet18")
    sd = model.state_dict()
    assert set(sd) == _published_preact_resnet18_keys()
    assert sd["conv1.weight"].shape == (64, 3, 3, 3)
    assert sd["layer2.0.shortcut.0.weight"].shape == (128, 64, 1, 1)
    assert sd["linear.weight"].shape == (10, 512)
    assert sum(p.numel() for p in model.parameters()) == _preact_resnet18_param_count() == 11_172_170


@pytest.mark.parametrize("depth, published", [(34, 46_160_474), (28, 36_479_194)])
def test_wide_resnet_keys_and_size_match_published(depth, published):
    model = _meta("wide_resnet", depth=depth, widen_factor=10)
    sd = model.state_dict()
    assert set(sd) == _published_wrn_keys(depth)
    assert sd["block1.layer.0.convShortcut.weight"].shape == (160, 16, 1, 1)
    assert sd["fc.weight"].shape == (10, 640)
    # the parameter counts reported for WRN-34-10 (46.16M) and WRN-28-10 (36.48M)
    assert sum(p.numel() for p in model.parameters()) == published


def test_small_models_layer_names():
    mlp = _meta("mlp", input_shape=(1, 8, 8), hidden=(16, 8), num_classes=10)
    assert {k: tuple(v.shape) for k, v in mlp.state_dict().items()} == {
        "net.1.weight": (16, 64), "net.1.bias": (16,), "net.3.weight": (8, 16), "net.3.bias": (8,),
        "net.5.weight": (10, 8), "net.5.bias": (10,),
    }
    cnn = _meta("small_cnn", in_channels=1, num_classes=10, input_size=8, width=4)
    assert {k: tuple(v.shape) for k, v in cnn.state_dict().items()} == {
        "features.0.weight": (4, 1, 3, 3), "features.0.bias": (4,), "features.2.weight": (8, 4, 3, 3),
        "features.2.bias": (8,), "classifier.1.weight": (128, 8 * 4 * 4), "classifier.1.bias": (128,),
        "classifier.3.weight": (10, 128), "classifier.3.bias": (10,),
    }


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"did you mean preact_resnet18"):
        create_model("preact_resnet")
    with pytest.raises(ValueError, match=r"wide_resnet"):
        create_model("wideresnet")
    with pytest.raises(ValueError, match=r"available: .*mlp"):
        create_model("zzz")


def test_bad_constructor_arguments_are_value_errors():
    with pytest.raises(ValueError, match=r"bad arguments for architecture 'mlp'.*bogus"):
        create_model("mlp", bogus=1)
    with pytest.raises(ValueError, match=r"6n\+4"):
        create_model("wide_resnet", depth=12)
    with pytest.raises(ValueError, match=r"activation 'swish'.*relu"):
        create_model("small_cnn", activation="swish")


def test_list_models_pattern_and_duplicate_registration():
    assert list_models() == sorted(list_models())
    assert list_models("wide_resnet*") == ["wide_resnet", "wide_resnet_advlc", "wide_resnet_trades"]
    assert list_models("nothing*") == []

    def mlp():  # same name as a registered model
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(mlp)


def test_normalized_matches_hand_normalisation():
    inner = nn.Conv2d(3, 2, 1)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    model = Normalized(inner, mean, std)
    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    by_hand = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(model(x), inner(by_hand))
    assert set(model.state_dict()) == {"mean", "std", "model.weight", "model.bias"}
    assert model.mean.flatten().tolist() == pytest.approx(mean)


def test_normalized_rejects_bad_statistics():
    with pytest.raises(ValueError, match="std must be positive"):
        Normalized(nn.Identity(), (0.5,), (0.0,))
    with pytest.raises(ValueError, match="3 channels but std has 1"):
        Normalized(nn.Identity(), (0.5, 0.5, 0.5), (0.2,))


def test_normalized_refuses_inputs_with_the_wrong_channel_count():
    import torch

    from landscape.models import Normalized, create_model

    model = Normalized(create_model("small_cnn", in_channels=3), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*shape \(2, 1, 8, 8\)"):
        model(torch.rand(2, 1, 8, 8))


# ---------------------------------------------------------------------------------------------- families, specs


def test_families_build_their_default_and_record_the_exact_wiring():
    from landscape.models import family, model_info

    assert family("preact_resnet18").default == "preact_resnet18_rice"
    assert set(family("preact_resnet18").members) == {"preact_resnet18_rice", "preact_resnet18_advlc",
                                                      "preact_resnet18_robustbench"}
    assert set(family("wide_resnet").members) == {"wide_resnet_trades", "wide_resnet_advlc"}
    model = create_model("wide_resnet", depth=10, widen_factor=1)
    assert model.landscape_arch == {"name": "wide_resnet_trades", "kwargs": {"depth": 10, "widen_factor": 1}}
    assert model_info("preact_resnet18_advlc").inputs == "[0,1]"
    assert model_info("preact_resnet18_rice").inputs == "normalized"


def test_published_key_layouts_of_the_new_wirings():
    """Keys written out from the published code's module names (AdvLC WRN, TRADES sub_block1, RobustBench)."""
    advlc = create_model("wide_resnet_advlc", depth=10, widen_factor=2)
    keys = {k for k in advlc.state_dict() if not k.endswith("num_batches_tracked")}
    bn = ("weight", "bias", "running_mean", "running_var")
    want = {"conv1.weight", "fc0.weight", "fc0.bias"} | {f"bn1.{s}" for s in bn}
    for layer in (1, 2, 3):
        p = f"layer{layer}.block0"
        want |= {f"{p}.{c}.weight" for c in ("conv1", "conv2", "shortcut.0")}
        want |= {f"{p}.{b}.{s}" for b in ("bn1", "bn2") for s in bn}
    assert keys == want
    trades = create_model("wide_resnet_trades", depth=10, widen_factor=2, sub_block1=True, bias_last=False)
    sd = trades.state_dict()
    assert "sub_block1.layer.0.convShortcut.weight" in sd and "fc.bias" not in sd
    rb = create_model("preact_resnet18_robustbench").state_dict()
    assert "bn.weight" not in rb and "layer2.0.shortcut.0.weight" in rb


def test_advlc_wrn_width_is_widen_factor():
    a = create_model("wide_resnet_advlc", depth=10, width=2)
    b = create_model("wide_resnet_advlc", depth=10, widen_factor=2)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    with pytest.raises(ValueError, match="widen_factor or width"):
        create_model("wide_resnet_advlc", depth=10, width=2, widen_factor=3)
    with pytest.raises(ValueError, match="activation must be one of relu, softplus"):
        create_model("wide_resnet_advlc", depth=10, widen_factor=1, activation="gelu")


def test_data_kwargs_follow_the_constructor_signature():
    from landscape.models import data_kwargs

    shape = (3, 32, 32)
    assert data_kwargs("preact_resnet18", input_shape=shape, num_classes=100) == {"num_classes": 100,
                                                                                   "in_channels": 3}
    assert data_kwargs("small_cnn", input_shape=(1, 8, 8), num_classes=10) == {
        "num_classes": 10, "in_channels": 1, "input_size": 8}
    assert data_kwargs("mlp", input_shape=(1, 8, 8), num_classes=10) == {"num_classes": 10,
                                                                         "input_shape": (1, 8, 8)}

    def only_width(width=3):
        return nn.Linear(width, 2)

    assert data_kwargs(only_width, input_shape=shape, num_classes=10) == {}


def test_user_spec_imports_a_file_once_and_by_module(tmp_path, monkeypatch):
    from landscape.models import absolute_spec, import_architecture, is_spec

    (tmp_path / "nets.py").write_text("import torch.nn as nn\nclass Tiny(nn.Linear):\n"
                                      "    def __init__(self, k=2):\n        super().__init__(3, k)\n")
    spec = f"{tmp_path}/nets.py:Tiny"
    assert is_spec(spec) and not is_spec("mlp")
    cls = import_architecture(spec)
    assert import_architecture(spec) is cls  # imported once per process
    model = create_model(spec, k=4)
    assert model.out_features == 4 and model.landscape_arch == {"name": spec, "kwargs": {"k": 4}}
    monkeypatch.chdir(tmp_path)
    assert absolute_spec("nets.py:Tiny") == spec and absolute_spec("pkg.mod:X") == "pkg.mod:X"
    monkeypatch.syspath_prepend(str(tmp_path))
    assert create_model("nets:Tiny").out_features == 2
    with pytest.raises(ValueError, match=r"bad architecture spec 'nets.py:'"):
        import_architecture("nets.py:")
    with pytest.raises(ValueError, match=r"importing .*broken.py failed \(ZeroDivisionError"):
        (tmp_path / "broken.py").write_text("x = 1 / 0\n")
        import_architecture(f"{tmp_path}/broken.py:X")
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        (tmp_path / "notnet.py").write_text("def make():\n    return 3\n")
        create_model(f"{tmp_path}/notnet.py:make")


def test_unknown_bare_name_suggests_registered_wirings():
    with pytest.raises(ValueError, match=r"did you mean .*preact_resnet18_advlc"):
        create_model("preact_resnet18_advcl")
    with pytest.raises(ValueError, match=r"file.py:ClassName"):
        create_model("resnet50")
