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
