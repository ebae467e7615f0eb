"""Small models for the bundled 8x8 digits data (and tiny test models)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ._registry import register_model

_ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "gelu": nn.GELU}


def _activation(name: str) -> type[nn.Module]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r} (allowed: {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


@register_model
def mlp(input_shape=(1, 8, 8), hidden=(256, 256), num_classes: int = 10, activation: str = "relu") -> nn.Module:
    """Fully connected net: flatten (B, *input_shape) -> hidden layers -> num_classes logits.

    Keys: ``net.{1,3,...}.weight`` (``net.0`` is the Flatten). ``activation`` in relu|softplus|tanh|gelu (smooth ones give
    non-zero logit curvature).
    """
    act = _activation(activation)
    dims = [math.prod(input_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(d_in, d_out), act()]
    layers.append(nn.Linear(dims[-1], num_classes))
    model = nn.Sequential(*layers)
    return _Wrap(model)


class _Wrap(nn.Module):
    """Keeps state-dict keys stable (``net.*``) whatever the depth."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 8,
                 width: int = 32, activation: str = "relu"):
        super().__init__()
        act = _activation(activation)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), act(),
            nn.Conv2d(width, 2 * width, 3, padding=1), act(),
            nn.MaxPool2d(2),
        )
        side = input_size // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * side * side, 128), act(), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def small_cnn(in_channels: int = 1, num_classes: int = 10, input_size: int = 8, width: int = 32,
              activation: str = "relu") -> nn.Module:
    """Two conv layers + max-pool + two linear layers; input (B, in_channels, input_size, input_size)."""
    return SmallCNN(in_channels, num_classes, input_size, width, activation)
