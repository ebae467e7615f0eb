"""Shared plumbing of the objectives' own inner maximisations (TRADES, MART, LLR): signed-gradient ascent of a
per-batch objective of the perturbation, projected onto the eps ball and the [0,1] box.

PGD on the cross-entropy lives in :func:`landscape.attacks.pgd`; this is the same step rule for the other
inner objectives (a KL divergence, the local-linearity gap), so each family module states only its objective.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .._base import frozen_params, set_mode
from ..attacks import _ascent_direction, _box, _check_norm, _project, _random_start

__all__ = ["ascend", "gaussian_start", "uniform_start"]


def gaussian_start(x: torch.Tensor, seed: int, scale: float = 0.001) -> torch.Tensor:
    """``scale · N(0, 1)`` noise of x's shape, from a generator seeded with ``seed`` (the TRADES/MART start)."""
    g = torch.Generator(device=x.device).manual_seed(int(seed))
    return scale * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


def uniform_start(x: torch.Tensor, eps: float, norm: str, seed: int) -> torch.Tensor:
    """A uniform point of the eps ball (as PGD's random start), boxed to [0,1]."""
    g = torch.Generator(device=x.device).manual_seed(int(seed))
    return _box(x, _random_start(x, eps, _check_norm(norm), g))


def ascend(model: nn.Module, objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
           delta: torch.Tensor, *, eps: float, steps: int, step_size: float, norm: str = "linf",
           train_mode: bool = False, box_start: bool = True) -> torch.Tensor:
    """``steps`` ascent steps on ``objective(x + delta)`` (a () scalar): ``delta ← Π(delta + α·sign(∇))``.

    Args:
        model: the classifier ``objective`` evaluates (mode set to ``train_mode`` inside, restored after; its
            parameters are frozen, so no ``.grad`` is left).
        objective: maps the (B, ...) perturbed input to a () scalar to increase.
        x: (B, ...) clean inputs in [0,1]. delta: (B, ...) start perturbation.
        eps, steps, step_size, norm: the ball and the step (L∞ sign step; L2 normalised step).
        box_start: clamp ``x + delta`` into [0,1] before the first gradient (the TRADES/MART codes do).

    Returns:
        (B, ...) the detached perturbed input ``clamp(x + delta, 0, 1)``.
    """
    norm = _check_norm(norm)
    delta = (_box(x, delta) if box_start else delta).detach()
    with set_mode(model, train_mode), frozen_params(model), torch.enable_grad():
        for _ in range(steps):
            inp = (x + delta).requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(inp), inp)
            delta = _box(x, _project(delta + step_size * _ascent_direction(grad, norm), eps, norm)).detach()
    return (x + delta).clamp(0.0, 1.0).detach()
