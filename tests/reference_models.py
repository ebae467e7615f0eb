"""Tiny float64 models with closed-form derivatives, shared by the measure and attack tests."""
from __future__ import annotations

import torch
import torch.nn as nn


class LinearSoftmax(nn.Module):
    """logits = W x + b (W: (k, d), seeded); the CE input Hessian is Wᵀ(diag(p) − ppᵀ)W."""

    def __init__(self, d: int = 64, k: int = 10, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(k, d, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(k, generator=g, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


class SumLogit(nn.Module):
    """logits = [c·Σx, 0]: for label 1, CE = softplus(s) with s = c·Σx, so ∂CE/∂x_j = c·σ(s)."""

    def __init__(self, c: float = 0.5):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, x):
        s = self.c * x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)
