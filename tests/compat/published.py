"""Independent re-implementations of the published networks, for logit comparisons.

Written from the structure of the published code (read, not copied): every forward pass here is a plain function
of a state dict with the *published* key names, built from ``F.conv2d``/``F.batch_norm``, sharing nothing with
``landscape.models``. The state dicts are generated here from the same published key layouts (random weights,
BatchNorm in eval mode with random running statistics), so a test also catches a wrongly named parameter.

Sources (structure only):
* AdvLC repo, TreeLLi/Combating-RO-AdvLC ``src/model/preact_resnet.py``: PreActBlock whose 1x1 shortcut conv
  takes the block's raw input ``x``; final ``bn``; adaptive average pooling; ``linear``.
* AdvLC repo ``src/model/wide_resnet.py``: ``wide_layer`` holding ``block{i}``; ``wide_basic`` = act(bn1) ->
  conv1 (stride 1) -> act(bn2) -> conv2 (stride s) + shortcut(x); final ``bn1``, ``fc0``; relu or softplus.
* Rice et al., locuslab/robust_overfitting ``preactresnet.py``: shortcut conv on relu(bn1(x)); final ``bn``;
  ``avg_pool2d(4)``. ``wideresnet.py`` (same as TRADES / RobustBench ``WideResNet``): ``block{1,2,3}.layer.{i}``;
  a block whose widths differ pre-activates x and feeds it to both conv1 (stride s) and ``convShortcut``;
  ``avg_pool2d(8)``; ``fc``.
* RobustBench ``model_zoo/architectures/resnet.py`` ``PreActResNet`` (default ``bn_before_fc=False``, block
  ``PreActBlock`` with the raw-input shortcut), and ``cifar10.py`` ``Wong2020FastNet``: ``(x - mu) / sigma``
  with ``mu``/``sigma`` buffers of shape (1, 3, 1, 1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------- weights


class _Weights:
    """Random tensors under published names; conv weights He-scaled so that logits stay O(1)."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        self.sd: dict[str, torch.Tensor] = {}

    def _randn(self, *shape):
        return torch.randn(*shape, generator=self.g)

    def conv(self, name: str, out_c: int, in_c: int, k: int) -> None:
        self.sd[f"{name}.weight"] = self._randn(out_c, in_c, k, k) * math.sqrt(2.0 / (in_c * k * k))

    def bn(self, name: str, c: int) -> None:
        self.sd[f"{name}.weight"] = 1 + 0.2 * self._randn(c)
        self.sd[f"{name}.bias"] = 0.2 * self._randn(c)
        self.sd[f"{name}.running_mean"] = 0.2 * self._randn(c)
        self.sd[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=self.g)
        self.sd[f"{name}.num_batches_tracked"] = torch.tensor(7)

    def linear(self, name: str, out_f: int, in_f: int, bias: bool = True) -> None:
        self.sd[f"{name}.weight"] = self._randn(out_f, in_f) / math.sqrt(in_f)
        if bias:
            self.sd[f"{name}.bias"] = 0.3 * self._randn(out_f)


def preact18_weights(seed: int, *, final_bn: bool = True, num_classes: int = 10) -> dict[str, torch.Tensor]:
    """PreActResNet18 keys of all three published codes (``bn`` only with ``final_bn``)."""
    w = _Weights(seed)
    w.conv("conv1", 64, 3, 3)
    in_planes = 64
    for layer, planes, stride in ((1, 64, 1), (2, 128, 2), (3, 256, 2), (4, 512, 2)):
        for i in range(2):
            p, s = f"layer{layer}.{i}", stride if i == 0 else 1
            w.bn(f"{p}.bn1", in_planes)
            w.conv(f"{p}.conv1", planes, in_planes, 3)
            w.bn(f"{p}.bn2", planes)
            w.conv(f"{p}.conv2", planes, planes, 3)
            if s != 1 or in_planes != planes:
                w.conv(f"{p}.shortcut.0", planes, in_planes, 1)
            in_planes = planes
    if final_bn:
        w.bn("bn", 512)
    w.linear("linear", num_classes, 512)
    return w.sd


def advlc_wrn_weights(seed: int, depth: int, width: int, num_classes: int = 10) -> dict[str, torch.Tensor]:
    """The AdvLC repo's Wide_ResNet keys."""
    w = _Weights(seed)
    n = (depth - 4) // 6
    stages = [16, 16 * width, 32 * width, 64 * width]
    w.conv("conv1", stages[0], 3, 3)
    in_planes = stages[0]
    for layer, stride in ((1, 1), (2, 2), (3, 2)):
        planes = stages[layer]
        for i in range(n):
            p, s = f"layer{layer}.block{i}", stride if i == 0 else 1
            w.bn(f"{p}.bn1", in_planes)
            w.conv(f"{p}.conv1", planes, in_planes, 3)
            w.bn(f"{p}.bn2", planes)
            w.conv(f"{p}.conv2", planes, planes, 3)
            if s != 1 or in_planes != planes:
                w.conv(f"{p}.shortcut.0", planes, in_planes, 1)
            in_planes = planes
    w.bn("bn1", stages[3])
    w.linear("fc0", num_classes, stages[3])
    return w.sd


def trades_wrn_weights(seed: int, depth: int, width: int, *, sub_block1: bool = False,
                       num_classes: int = 10) -> dict[str, torch.Tensor]:
    """TRADES / Rice et al. / RobustBench WideResNet keys (``sub_block1`` as in TRADES WRN-34-10 files)."""
    w = _Weights(seed)
    n = (depth - 4) // 6
    stages = [16, 16 * width, 32 * width, 64 * width]
    w.conv("conv1", stages[0], 3, 3)

    def stage(prefix: str, in_planes: int, planes: int) -> None:
        for i in range(n):
            c_in = in_planes if i == 0 else planes
            p = f"{prefix}.layer.{i}"
            w.bn(f"{p}.bn1", c_in)
            w.conv(f"{p}.conv1", planes, c_in, 3)
            w.bn(f"{p}.bn2", planes)
            w.conv(f"{p}.conv2", planes, planes, 3)
            if c_in != planes:
                w.conv(f"{p}.convShortcut", planes, c_in, 1)

    stage("block1", stages[0], stages[1])
    if sub_block1:
        stage("sub_block1", stages[0], stages[1])
    stage("block2", stages[1], stages[2])
    stage("block3", stages[2], stages[3])
    w.bn("bn1", stages[3])
    w.linear("fc", num_classes, stages[3])
    return w.sd


# ---------------------------------------------------------------------------------------------- forwards


def _bn(x, sd, name):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, momentum=0.0, eps=1e-5)


def _conv(x, sd, name, stride=1, padding=0):
    return F.conv2d(x, sd[f"{name}.weight"], stride=stride, padding=padding)


def preact18_forward(sd, x, *, shortcut_on: str, final_bn: bool = True):
    """PreActResNet18 on (B, 3, 32, 32); ``shortcut_on`` ``"raw"`` (AdvLC, RobustBench) or ``"preact"`` (Rice)."""
    out = _conv(x, sd, "conv1", padding=1)
    for layer, stride in zip(range(1, 5), (1, 2, 2, 2)):
        for i in range(2):
            p, s = f"layer{layer}.{i}", stride if i == 0 else 1
            pre = F.relu(_bn(out, sd, f"{p}.bn1"))
            if f"{p}.shortcut.0.weight" in sd:
                short = _conv(pre if shortcut_on == "preact" else out, sd, f"{p}.shortcut.0", stride=s)
            else:
                short = out
            h = _conv(pre, sd, f"{p}.conv1", stride=s, padding=1)
            h = _conv(F.relu(_bn(h, sd, f"{p}.bn2")), sd, f"{p}.conv2", padding=1)
            out = h + short
    if final_bn:
        out = F.relu(_bn(out, sd, "bn"))
    out = F.avg_pool2d(out, 4).flatten(1)
    return F.linear(out, sd["linear.weight"], sd["linear.bias"])


def advlc_wrn_forward(sd, x, *, depth: int, activation: str = "relu"):
    """The AdvLC repo's Wide_ResNet on (B, 3, 32, 32)."""
    act = F.relu if activation == "relu" else F.softplus
    n = (depth - 4) // 6
    out = _conv(x, sd, "conv1", padding=1)
    for layer, stride in ((1, 1), (2, 2), (3, 2)):
        for i in range(n):
            p, s = f"layer{layer}.block{i}", stride if i == 0 else 1
            h = _conv(act(_bn(out, sd, f"{p}.bn1")), sd, f"{p}.conv1", padding=1)
            h = _conv(act(_bn(h, sd, f"{p}.bn2")), sd, f"{p}.conv2", stride=s, padding=1)
            short = _conv(out, sd, f"{p}.shortcut.0", stride=s) if f"{p}.shortcut.0.weight" in sd else out
            out = h + short
    out = act(_bn(out, sd, "bn1"))
    out = F.adaptive_avg_pool2d(out, 1).flatten(1)
    return F.linear(out, sd["fc0.weight"], sd["fc0.bias"])


def trades_wrn_forward(sd, x, *, depth: int):
    """TRADES / Rice et al. / RobustBench WideResNet on (B, 3, 32, 32); ``sub_block1`` is never used."""
    n = (depth - 4) // 6
    out = _conv(x, sd, "conv1", padding=1)
    for block, stride in (("block1", 1), ("block2", 2), ("block3", 2)):
        for i in range(n):
            p, s = f"{block}.layer.{i}", stride if i == 0 else 1
            if f"{p}.convShortcut.weight" in sd:  # widths differ: x itself is pre-activated
                out = F.relu(_bn(out, sd, f"{p}.bn1"))
                h = F.relu(_bn(_conv(out, sd, f"{p}.conv1", stride=s, padding=1), sd, f"{p}.bn2"))
                out = _conv(out, sd, f"{p}.convShortcut", stride=s) + _conv(h, sd, f"{p}.conv2", padding=1)
            else:
                a = F.relu(_bn(out, sd, f"{p}.bn1"))
                h = F.relu(_bn(_conv(a, sd, f"{p}.conv1", stride=s, padding=1), sd, f"{p}.bn2"))
                out = out + _conv(h, sd, f"{p}.conv2", padding=1)
    out = F.relu(_bn(out, sd, "bn1"))
    out = F.avg_pool2d(out, 8).flatten(1)
    bias = sd.get("fc.bias")
    return F.linear(out, sd["fc.weight"], bias)


def normalized(forward, mean, std):
    """``x -> forward((x - mean) / std)`` with (1, C, 1, 1) statistics, as the Rice et al. scripts and the
    RobustBench ``mu``/``sigma`` models do."""
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return lambda x: forward((x - mean) / std)
