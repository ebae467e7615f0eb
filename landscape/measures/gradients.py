"""First-order input-space measures: the per-sample input gradient of the cross-entropy and its norms.

``g_i = ∇ₓ CE(f(x_i), y_i)``. Summing the per-sample losses and back-propagating once gives every ``g_i``
exactly when samples do not interact, which holds in eval mode (batch-norm uses running statistics).
The paper's "input gradient" (IG) measure is ``grad_l1 = ‖g_i‖₁``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .._base import eval_mode, frozen_params
from ._autograd import loss_logits_grad, prepare
from .spec import BatchContext, MeasureSpec

__all__ = ["NORMS", "GRAD", "input_gradient", "gradient_norms"]

NORMS = ("grad_l1", "grad_l2", "grad_linf")
"""Keys of :func:`gradient_norms` (and column names of the measure table)."""


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
    x, y = prepare(model, x, y)
    with eval_mode(model), frozen_params(model):
        return loss_logits_grad(model, x, y)[2]


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
