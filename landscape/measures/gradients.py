"""First-order input-space measures: the per-sample input gradient of the cross-entropy and its norms.

``g_i = ∇ₓ CE(f(x_i), y_i)``. Summing the per-sample losses and back-propagating once gives every ``g_i``
exactly when samples do not interact, which holds in eval mode (batch-norm uses running statistics).
The paper's "input gradient" (IG) measure is ``grad_l1 = ‖g_i‖₁``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .._base import check_batch, check_labels_fit, eval_mode, frozen_params, model_dtype, per_sample_loss
from .spec import BatchContext, MeasureSpec

__all__ = ["NORMS", "GRAD", "input_gradient", "gradient_norms"]

NORMS = ("grad_l1", "grad_l2", "grad_linf")
"""Keys of :func:`gradient_norms` (and column names of the measure table)."""


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             *, need_labels: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the model and batch; return x (contiguous, detached, in the model's dtype) and y on x's device."""
    _check_model(model)
    x, y = check_batch(x, y, dtype=model_dtype(model))
    if y is None:
        if need_labels:
            raise TypeError("labels y are required")
        return x.detach().contiguous(), None
    return x.detach().contiguous(), y.to(x.device)


def _check_like(t: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` as a contiguous detached tensor of x's shape, dtype and device (NaN/Inf refused)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if t.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN/Inf values")
    return t.detach().to(device=x.device, dtype=x.dtype).contiguous()


def _loss_logits_grad(model: nn.Module, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unchecked core: ``(loss (B,), logits (B, K), grad (B, ...))`` at ``x``, all detached.

    The model must already be in eval mode with frozen parameters.
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logits = model(xr)
        check_labels_fit(logits, y)
        loss = per_sample_loss(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), xr)
    return loss.detach(), logits.detach(), grad.detach()


def _norms(grad: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample L1, L2 and L∞ norms of (B, ...) -> dict of (B,) tensors keyed by :data:`NORMS`."""
    flat = grad.flatten(1)
    return {"grad_l1": flat.abs().sum(1), "grad_l2": flat.norm(dim=1), "grad_linf": flat.abs().amax(1)}


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample gradient of the cross-entropy with respect to the input.

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) inputs.
        y: (B,) integer labels.

    Returns:
        (B, ...) tensor, row i = ``∇ₓ CE(f(x_i), y_i)``, detached, in the model's dtype.

    Example:
        >>> model = create_model("mlp", hidden=(16,))
        >>> input_gradient(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
        torch.Size([2, 1, 8, 8])
    """
    x, y = _prepare(model, x, y)
    with eval_mode(model), frozen_params(model):
        return _loss_logits_grad(model, x, y)[2]


def gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1, L2 and L∞ norms of each sample's input gradient.

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) inputs.
        y: (B,) integer labels.

    Returns:
        ``{"grad_l1": (B,), "grad_l2": (B,), "grad_linf": (B,)}``. ``grad_l1`` is the paper's IG measure.
    """
    return _norms(input_gradient(model, x, y))


# ------------------------------------------------------------------------------- registry entry

def _grad_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    return _norms(ctx.grad)


GRAD = MeasureSpec(
    "grad", NORMS, _grad_measure,
    label=("input-gradient norm ‖∇ₓL‖₁", "input-gradient norm ‖∇ₓL‖₂", "input-gradient norm ‖∇ₓL‖∞"),
    unit="nats / unit input", default=True,
    paper="grad_l1 is the paper's IG (L1 norm of the input gradient of the cross-entropy); L2/L∞ are the toolkit's")
"""``grad``: the three norms of the input gradient."""
