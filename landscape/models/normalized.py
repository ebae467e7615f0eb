"""Normalisation as a model layer, so that attacks and measures work in [0,1] pixel space."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class Normalized(nn.Module):
    """``model((x - mean) / std)`` with per-channel ``mean``/``std``; input (B, C, H, W) in [0,1].

    The inner model stays reachable as ``.model``; mean/std are buffers (saved with the weights).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.numel() != std_t.numel():
            raise ValueError(f"mean has {mean_t.numel()} channels but std has {std_t.numel()}")
        if (std_t <= 0).any():
            raise ValueError(f"std must be positive, got {list(std)}")
        self.model = model
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:  # broadcasting would hide a wrong dataset
            raise ValueError(f"Normalized expects (B, {self.mean.shape[1]}, H, W) inputs for its "
                             f"{self.mean.shape[1]}-channel mean/std, got shape {tuple(x.shape)}")
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
