"""Input-landscape smoothness regularisers: CURE (Moosavi-Dezfooli et al., CVPR 2019) and LLR (Qin et al.,
NeurIPS 2019).

CURE: ``mean_i CE(f(xᵢ), yᵢ) + λ · mean_i ‖∇ₓℓᵢ(xᵢ + h·zᵢ) − ∇ₓℓᵢ(xᵢ)‖₂²`` with
``zᵢ = sign(∇ₓℓᵢ(xᵢ)) / ‖sign(∇ₓℓᵢ(xᵢ))‖₂`` (held fixed, no gradient through z), the finite-difference
curvature penalty of the paper's Eq. (7)–(8); λ = 4 and h = 1.5 (CIFAR-10, pixels in [0,255]: the largest h of
the paper's ramp 0.1 → 1.5) → ``h = 1.5/255`` in the [0,1] units used here. ``ℓᵢ`` is the per-sample
cross-entropy, so each gradient row is that sample's own. No adversarial examples: CURE trains on clean inputs.

LLR: ``mean_i [ℓᵢ(x) + λ · g(δᵢ; xᵢ) + μ · |δᵢᵀ∇ₓℓᵢ(xᵢ)|]`` with the local-linearity gap
``g(δ; x) = |ℓ(x + δ) − ℓ(x) − δᵀ∇ₓℓ(x)|`` and ``δ`` its maximiser over the eps ball, found by signed ascent
on ``Σᵢ g(δᵢ; xᵢ)`` from a uniform random start (the paper's Algorithm 1); λ = 4, μ = 3 (CIFAR-10, Table 4 of
the paper). The gradient ``∇ₓℓ(x)`` inside the outer loss is kept differentiable (double backpropagation).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .._base import per_sample_loss
from ._ascent import ascend, uniform_start

__all__ = ["cure_loss", "llr_attack", "llr_loss"]


def _loss_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, create_graph: bool):
    """((B,) per-sample CE, (B, ...) its input gradient) at ``x``; graphs kept when ``create_graph``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        losses = per_sample_loss(model(x), y)
        (grad,) = torch.autograd.grad(losses.sum(), x, create_graph=create_graph)
    return losses, grad


def cure_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lam: float, h: float) -> torch.Tensor:
    """() CURE objective (module docstring), differentiable in the weights."""
    losses, grad = _loss_and_grad(model, x, y, create_graph=True)
    sign = grad.detach().sign()
    z = sign / sign.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, *([1] * (x.dim() - 1)))
    _, grad_h = _loss_and_grad(model, x + h * z, y, create_graph=True)
    penalty = (grad_h - grad).flatten(1).pow(2).sum(1).mean()
    return losses.mean() + lam * penalty


def _gap(model, x_adv, y, losses, grad, delta):
    """(B,) ``|ℓ(x + δ) − ℓ(x) − δᵀ∇ℓ(x)|`` and (B,) ``δᵀ∇ℓ(x)``."""
    inner = (delta * grad).flatten(1).sum(1)
    return (per_sample_loss(model(x_adv), y) - losses - inner).abs(), inner


def llr_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
               step_size: float, norm: str = "linf", seed: int = 0, train_mode: bool = True) -> torch.Tensor:
    """(B, ...) ``x + δ`` with δ maximising ``Σᵢ g(δᵢ; xᵢ)`` (uniform start, signed ascent, detached)."""
    losses, grad = _loss_and_grad(model, x, y, create_graph=False)
    losses, grad = losses.detach(), grad.detach()

    def objective(inp):
        return _gap(model, inp, y, losses, grad, inp - x)[0].sum()

    return ascend(model, objective, x, uniform_start(x, eps, norm, seed), eps=eps, steps=steps,
                  step_size=step_size, norm=norm, train_mode=train_mode)


def llr_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *, lam: float,
             mu: float) -> torch.Tensor:
    """() LLR objective at the given ``x_adv = x + δ`` (module docstring), differentiable in the weights."""
    losses, grad = _loss_and_grad(model, x, y, create_graph=True)
    gap, inner = _gap(model, x_adv, y, losses, grad, (x_adv - x).detach())
    return losses.mean() + lam * gap.mean() + mu * inner.abs().mean()
