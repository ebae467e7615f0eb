"""Adversarial attacks in [0,1] pixel space: FGSM and PGD under the L∞ or L2 norm.

Both attacks share one call shape, ``attack(model, x, y, eps, ...) -> (x_adv, delta)``:

* ``x`` is a (B, ...) batch of inputs in [0,1] (uint8 is scaled by 1/255), ``y`` its (B,) integer labels;
* ``x_adv = clamp(x + delta, 0, 1)`` and the returned ``delta`` is the *effective* perturbation
  ``x_adv - x`` (so ``x_adv == x + delta`` exactly and ``delta`` lies in the eps ball);
* the loss ascended is the per-sample cross-entropy, so each sample is attacked independently (exact in
  eval mode; in ``train_mode`` batch-norm statistics couple the samples, as in AT training loops);
* the caller's train/eval mode is restored and no ``.grad`` is left on the model's parameters;
* randomness (the PGD random start) comes from a ``torch.Generator`` seeded with ``seed`` on the input's
  device, never from the global RNG.

Example:
    >>> import torch
    >>> from landscape import create_model
    >>> from landscape.attacks import pgd
    >>> model = create_model("mlp", hidden=(16,))
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv, delta = pgd(model, x, y, eps=8 / 255, steps=5)
    >>> bool(delta.abs().max() <= 8 / 255 + 1e-6)
    True
"""
from __future__ import annotations

import math
from enum import Enum

import torch
import torch.nn as nn

from ._base import check_labels_fit, check_model_batch, frozen_params, set_mode, per_sample_loss

__all__ = ["Norm", "fgsm", "pgd"]

_TINY = 1e-12


class Norm(str, Enum):
    """Threat-model norm; plain strings ``"linf"`` and ``"l2"`` are accepted everywhere."""

    LINF = "linf"
    L2 = "l2"


def _check_norm(norm: str | Norm) -> Norm:
    try:
        return Norm(norm)
    except ValueError:
        allowed = ", ".join(repr(n.value) for n in Norm)
        raise ValueError(f"unknown norm {norm!r} (allowed: {allowed})") from None


def _check_eps(eps: float, name: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {eps}")
    return float(eps)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped (B, 1, ..., 1) to broadcast against ``t`` (B, ...)."""
    return t.flatten(1).norm(dim=1).reshape(-1, *([1] * (t.dim() - 1)))


def _loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, ...) gradient of the summed per-sample cross-entropy with respect to the input ``x``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        check_labels_fit(logits, y)
        (grad,) = torch.autograd.grad(per_sample_loss(logits, y).sum(), x)
    return grad


def _ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Steepest-ascent unit step: sign(g) for L∞, g/‖g‖₂ per sample for L2 (0 where g = 0)."""
    if norm is Norm.LINF:  # sign(NaN) is 0 in torch: keep NaN so a broken gradient is never a silent no-op
        return torch.where(torch.isnan(grad), grad, grad.sign())
    return grad / _flat_norm(grad).clamp_min(_TINY)


def _project(delta: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Project each sample of ``delta`` (B, ...) onto the eps ball of ``norm``."""
    if norm is Norm.LINF:
        return delta.clamp(-eps, eps)
    scale = (eps / _flat_norm(delta).clamp_min(_TINY)).clamp(max=1.0)
    return delta * scale


def _box(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Effective perturbation after clamping ``x + delta`` to [0,1]."""
    return (x + delta).clamp(0.0, 1.0) - x


def _result(x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_adv, x_adv - x)`` with ``x_adv = clamp(x + delta, 0, 1)`` exactly inside the box, detached."""
    x_adv = (x + delta).clamp(0.0, 1.0).detach()
    return x_adv, (x_adv - x).detach()


def _random_start(x: torch.Tensor, eps: float, norm: Norm, generator: torch.Generator) -> torch.Tensor:
    """Uniform sample in the eps ball: per-coordinate U(-eps, eps) for L∞; uniform in the L2 ball."""
    if norm is Norm.LINF:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = g / _flat_norm(g).clamp_min(_TINY)
    dim = x[0].numel()
    r = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / dim)
    return direction * (eps * r).reshape(-1, *([1] * (x.dim() - 1)))


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
         norm: str | Norm = "linf") -> tuple[torch.Tensor, torch.Tensor]:
    """Fast gradient (sign) method: one full step of size ``eps`` along the loss gradient.

    Goodfellow et al., "Explaining and harnessing adversarial examples", ICLR 2015.

    Args:
        model: classifier returning (B, K) logits; attacked in eval mode.
        x: (B, ...) inputs in [0,1].
        y: (B,) integer labels.
        eps: radius of the perturbation ball, >= 0, in [0,1] pixel units.
        norm: ``"linf"`` (step ``eps·sign(g)``) or ``"l2"`` (step ``eps·g/‖g‖₂``). Default ``"linf"``.

    Returns:
        ``(x_adv, delta)``, both (B, ...) detached, ``x_adv = clamp(x + delta, 0, 1)``.

    Raises:
        ValueError: negative/non-finite eps, unknown norm, x outside [0,1], bad labels.
        TypeError: model not a Module, non-numeric eps, bad tensor dtypes.
    """
    norm = _check_norm(norm)
    eps = _check_eps(eps)
    x, y = check_model_batch(model, x, y, unit_box=True)
    with set_mode(model, False), frozen_params(model):
        grad = _loss_grad(model, x, y)
    return _result(x, eps * _ascent_direction(grad, norm))


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
        step_size: float | None = None, norm: str | Norm = "linf", random_start: bool = True, seed: int = 0,
        train_mode: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradient descent (ascent on the loss) within an L∞ or L2 ball.

    Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018. Each step
    moves ``step_size`` along ``sign(g)`` (L∞) or ``g/‖g‖₂`` (L2), projects onto the eps ball and then
    onto the [0,1] box. No early stopping and no restarts.

    Args:
        model: classifier returning (B, K) logits.
        x: (B, ...) inputs in [0,1].
        y: (B,) integer labels.
        eps: radius of the ball, >= 0, in [0,1] pixel units. ``eps=0`` returns ``x`` unchanged.
        steps: number of gradient steps, >= 1. Default 10.
        step_size: step length; default ``2.5 * eps / steps``.
        norm: ``"linf"`` or ``"l2"``. Default ``"linf"``.
        random_start: start from a uniform sample in the eps ball (per-coordinate U(-eps, eps) for L∞,
            uniform in the ball for L2). Default True.
        seed: seeds the random start (a ``torch.Generator`` on x's device). Default 0.
        train_mode: attack with the model in training mode (batch-norm uses batch statistics and, as in
            the AT training loops of Rice et al. and AdvLC, updates its running statistics); the caller's
            mode is restored afterwards. Default False (eval mode).

    Returns:
        ``(x_adv, delta)``, both (B, ...) detached, ``x_adv = clamp(x + delta, 0, 1)``, ``delta`` within
        the eps ball.

    Raises:
        ValueError: negative eps or step size, steps < 1, unknown norm, x outside [0,1], bad labels.
        TypeError: model not a Module, non-numeric eps/step size, non-integer steps, bad tensor dtypes.
    """
    norm = _check_norm(norm)
    eps = _check_eps(eps)
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    alpha = 2.5 * eps / steps if step_size is None else _check_eps(step_size, "step_size")
    x, y = check_model_batch(model, x, y, unit_box=True)
    if random_start:
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
        delta = _box(x, _random_start(x, eps, norm, generator))
    else:
        delta = torch.zeros_like(x)
    with set_mode(model, bool(train_mode)), frozen_params(model):
        for _ in range(steps):
            grad = _loss_grad(model, x + delta, y)
            delta = _box(x, _project(delta + alpha * _ascent_direction(grad, norm), eps, norm))
    return _result(x, delta)
