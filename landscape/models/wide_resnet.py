"""Wide ResNet (Zagoruyko & Komodakis 2016) in the two wirings that published checkpoints use.

* ``wide_resnet_trades``: TRADES / Rice et al. 2020 / RobustBench ``WideResNet``. Keys ``conv1``,
  ``block{1-3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}``, ``bn1``, ``fc``; stride on ``conv1``; a
  down-sampling block's shortcut conv sees ``relu(bn1(x))``. ``sub_block1=True`` adds the unused
  ``sub_block1`` of TRADES WRN-34-10 files; ``bias_last=False`` drops ``fc.bias`` (RobustBench option).
* ``wide_resnet_advlc``: the AdvLC repo's own WRN (TreeLLi/Combating-RO-AdvLC ``Wide_ResNet``). Keys ``conv1``,
  ``layer{1-3}.block{i}.{bn1,conv1,bn2,conv2,shortcut.0}``, ``bn1``, ``fc0``; stride on ``conv2``; the shortcut
  conv sees the block's raw input; ``activation`` relu or softplus everywhere.

``wide_resnet`` is the family: it builds ``wide_resnet_trades``; when loading, the keys decide, and ``depth``
(blocks per stage) and ``widen_factor`` (channels of the first block / 16) are read from the keys and shapes, so a
Rice et al. WRN-34-k of any width (their ``--width-factor``, 1 to 20) or the AdvLC repo's default WRN-34-1 loads
without arguments.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_family, register_model


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        shortcut = x if self.equal_in_out else self.convShortcut(o)
        out = self.relu2(self.bn2(self.conv1(o)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out)


class NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(
            *[BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
              for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10,
                 in_channels: int = 3, drop_rate: float = 0.0, sub_block1: bool = False, bias_last: bool = True):
        super().__init__()
        n = _blocks_per_stage(depth)
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        if sub_block1:  # TRADES files carry this copy of block1; their forward never uses it
            self.sub_block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=False)
        self.fc = nn.Linear(ch[3], num_classes, bias=bias_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _blocks_per_stage(depth: int) -> int:
    if not isinstance(depth, int) or (depth - 4) % 6 != 0 or depth < 10:
        raise ValueError(f"wide_resnet depth must be 6n+4 (e.g. 16, 28, 34), got {depth!r}")
    return (depth - 4) // 6


_ACTIVATIONS = {"relu": F.relu, "softplus": F.softplus}


class AdvLCBlock(nn.Module):
    """The AdvLC repo's ``wide_basic``: stride on conv2, shortcut conv on the raw input."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x: torch.Tensor, act) -> torch.Tensor:
        out = self.conv1(act(self.bn1(x)))
        out = self.conv2(act(self.bn2(out)))
        return out + self.shortcut(x)


class AdvLCStage(nn.Module):
    """``n`` blocks registered as ``block0 .. block{n-1}`` (the AdvLC repo's key names)."""

    def __init__(self, n: int, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.n = n
        for i in range(n):
            self.add_module(f"block{i}", AdvLCBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1))

    def forward(self, x: torch.Tensor, act) -> torch.Tensor:
        for i in range(self.n):
            x = getattr(self, f"block{i}")(x, act)
        return x


class WideResNetAdvLC(nn.Module):
    """The AdvLC repo's WRN; input (B, in_channels, H, W) -> (B, num_classes)."""

    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10, in_channels: int = 3,
                 activation: str = "relu"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        n = _blocks_per_stage(depth)
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.layer1 = AdvLCStage(n, ch[0], ch[1], 1)
        self.layer2 = AdvLCStage(n, ch[1], ch[2], 2)
        self.layer3 = AdvLCStage(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc0 = nn.Linear(ch[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = _ACTIVATIONS[self.activation]
        out = self.layer3(self.layer2(self.layer1(self.conv1(x), act), act), act)
        out = act(self.bn1(out))
        return self.fc0(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model(family="wide_resnet", inputs="either",
                source="TRADES / Rice et al. 2020 / RobustBench WideResNet: block{1,2,3}.layer.{i}, stride on conv1")
def wide_resnet_trades(depth: int = 34, widen_factor: int = 10, num_classes: int = 10, in_channels: int = 3,
                       drop_rate: float = 0.0, sub_block1: bool = False, bias_last: bool = True) -> nn.Module:
    """Wide ResNet-``depth``-``widen_factor`` (WRN-34-10 by default), input (B, C, 32, 32)."""
    return WideResNet(depth, widen_factor, num_classes, in_channels, drop_rate, sub_block1, bias_last)


@register_model(family="wide_resnet", inputs="[0,1]",
                source="AdvLC repo TreeLLi/Combating-RO-AdvLC Wide_ResNet: layer{1,2,3}.block{i}, stride on conv2, "
                       "raw-input shortcut")
def wide_resnet_advlc(depth: int = 34, widen_factor: int | None = None, num_classes: int = 10, in_channels: int = 3,
                      activation: str = "relu", width: int | None = None) -> nn.Module:
    """The AdvLC repo's WRN-``depth``-``widen_factor``; ``width`` is that repo's name for ``widen_factor``."""
    if widen_factor is not None and width is not None and widen_factor != width:
        raise ValueError(f"give widen_factor or width (the AdvLC repo's name for it), not both: {widen_factor} vs "
                         f"{width}")
    k = widen_factor if widen_factor is not None else (width if width is not None else 10)
    return WideResNetAdvLC(depth, k, num_classes, in_channels, activation)


def _shape_kwargs(keys: Mapping[str, Any], stage: str, block: str) -> dict:
    """``depth`` from the number of blocks in the first stage and ``widen_factor`` from its first conv's output
    channels (16 * widen_factor), for keys ``{stage}.{block}{i}.conv1.weight``; what cannot be read is left out."""
    pattern = re.compile(rf"^{re.escape(stage)}\.{re.escape(block)}(\d+)\.conv1\.weight$")
    blocks = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    out: dict = {}
    if blocks and blocks == set(range(len(blocks))):
        out["depth"] = 6 * len(blocks) + 4
    shape = keys.get(f"{stage}.{block}0.conv1.weight") if isinstance(keys, Mapping) else None
    if shape is not None and len(shape) == 4 and shape[0] % 16 == 0 and shape[0] > 0:
        out["widen_factor"] = int(shape[0]) // 16
    return out


def _infer(keys: Mapping[str, Any], layout: str) -> tuple[str, dict, tuple[str, ...]]:
    """The wiring a checkpoint's keys point to (see ``Family``); depth, width and the TRADES extras become
    constructor arguments (Rice et al. trained WRN-34 with widths 1 to 20, the AdvLC repo's default is WRN-34-1)."""
    if any(k.startswith("layer1.block0.") for k in keys):
        return "wide_resnet_advlc", _shape_kwargs(keys, "layer1", "block"), ()
    extra = _shape_kwargs(keys, "block1", "layer.")
    if any(k.startswith("sub_block1.") for k in keys):
        extra["sub_block1"] = True
    if "fc.weight" in keys and "fc.bias" not in keys:
        extra["bias_last"] = False
    return "wide_resnet_trades", extra, ()


register_family("wide_resnet", default="wide_resnet_trades", infer=_infer, aliases={"width": "widen_factor"})
