"""PreAct ResNet-18 (He et al. 2016) in the three wirings that published checkpoints use.

All share the keys ``conv1``, ``layer{1-4}.{0,1}.{bn1,conv1,bn2,conv2,shortcut.0}``, ``linear``; they differ in
what the 1x1 shortcut conv of a down-sampling block sees and in the final BatchNorm ``bn``:

===============================  ======================================  ==========  =============================
name                             shortcut conv applied to                final ``bn``  published in
===============================  ======================================  ==========  =============================
``preact_resnet18_rice``         ``relu(bn1(x))`` (pre-activated input)   yes         Rice et al. 2020
                                                                                     (locuslab/robust_overfitting),
                                                                                     kuangliu/pytorch-cifar,
                                                                                     RobustBench ``PreActBlockV2``
``preact_resnet18_advlc``        ``x`` (the block's raw input)            yes         AdvLC repo
                                                                                     (TreeLLi/Combating-RO-AdvLC),
                                                                                     Wong et al. 2020 fast_adversarial
``preact_resnet18_robustbench``  ``x`` (the block's raw input)            no          RobustBench ``PreActResNet``
                                                                                     (e.g. Wong2020Fast)
===============================  ======================================  ==========  =============================

``preact_resnet18`` is the family: it builds ``preact_resnet18_rice`` and, when loading, lets the file decide (the
AdvLC repo's checkpoint and SWA layouts mean ``_advlc``; a bare state dict fits ``_rice`` and ``_advlc`` alike, and
the loader decides by evidence when it has some).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_family, register_model

SHORTCUT_INPUTS = ("preact", "raw")


class PreActBlock(nn.Module):
    """Pre-activation basic block; ``shortcut_input`` chooses what the 1x1 shortcut conv sees."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut_input: str = "preact"):
        super().__init__()
        if shortcut_input not in SHORTCUT_INPUTS:
            raise ValueError(f"shortcut_input must be one of {SHORTCUT_INPUTS}, got {shortcut_input!r}")
        self.shortcut_input = shortcut_input
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        if hasattr(self, "shortcut"):
            shortcut = self.shortcut(out if self.shortcut_input == "preact" else x)
        else:
            shortcut = x  # identity shortcuts take the raw input in every wiring
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Input (B, in_channels, H, W) -> (B, num_classes) logits; 32x32 CIFAR in the published code."""

    def __init__(self, num_blocks: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10, in_channels: int = 3,
                 shortcut_input: str = "preact", final_bn: bool = True):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.layer1 = self._make_layer(64, num_blocks[0], 1, shortcut_input)
        self.layer2 = self._make_layer(128, num_blocks[1], 2, shortcut_input)
        self.layer3 = self._make_layer(256, num_blocks[2], 2, shortcut_input)
        self.layer4 = self._make_layer(512, num_blocks[3], 2, shortcut_input)
        if final_bn:
            self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int, shortcut_input: str) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(PreActBlock(self.in_planes, planes, s, shortcut_input))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if hasattr(self, "bn"):
            out = F.relu(self.bn(out))
        # adaptive pooling equals avg_pool2d(4) at 32x32 and keeps other input sizes usable
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@register_model(family="preact_resnet18", inputs="normalized",
                source="Rice et al. 2020 locuslab/robust_overfitting, kuangliu/pytorch-cifar: shortcut conv on "
                       "relu(bn1(x))")
def preact_resnet18_rice(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """PreAct ResNet-18, shortcut conv on the pre-activated input, final BatchNorm; input (B, C, 32, 32)."""
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels, shortcut_input="preact", final_bn=True)


@register_model(family="preact_resnet18", inputs="[0,1]",
                source="AdvLC repo TreeLLi/Combating-RO-AdvLC, Wong et al. 2020 fast_adversarial: shortcut conv on "
                       "the block's raw input")
def preact_resnet18_advlc(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """PreAct ResNet-18, shortcut conv on the block's raw input, final BatchNorm; input (B, C, 32, 32)."""
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels, shortcut_input="raw", final_bn=True)


@register_model(family="preact_resnet18", inputs="[0,1]",
                source="RobustBench PreActResNet (e.g. Wong2020Fast): shortcut conv on the raw input, no final "
                       "BatchNorm")
def preact_resnet18_robustbench(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """PreAct ResNet-18, shortcut conv on the block's raw input, no final BatchNorm; input (B, C, 32, 32)."""
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels, shortcut_input="raw", final_bn=False)


def _infer(keys: Mapping[str, Any], layout: str) -> tuple[str, dict, tuple[str, ...]]:
    """The wiring a checkpoint's keys and layout point to (see ``Family``)."""
    if "linear.weight" in keys and "bn.weight" not in keys:
        return "preact_resnet18_robustbench", {}, ()  # only RobustBench drops the final BatchNorm
    if layout in ("advlc", "advlc_swa"):  # the AdvLC repo's checkpoint and its SWA file
        return "preact_resnet18_advlc", {}, ()
    if layout == "rice":
        return "preact_resnet18_rice", {}, ()
    return "preact_resnet18_rice", {}, ("preact_resnet18_advlc",)  # same keys, different shortcut input


register_family(
    "preact_resnet18", default="preact_resnet18_rice", infer=_infer,
    hint="if the file comes from the AdvLC repo (TreeLLi/Combating-RO-AdvLC) or Wong et al.'s fast_adversarial "
         "code, whose shortcut conv sees the block's raw input, use preact_resnet18_advlc (CLI: --arch "
         "preact_resnet18_advlc); --arch preact_resnet18_rice silences this note")
