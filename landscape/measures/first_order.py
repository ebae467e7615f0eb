"""How much of the adversarial loss increase the gradient alone accounts for (the paper's second finding).

Li & Spratling (2023) argue that adversarial training regularises the input gradient implicitly, and that
this regularisation weakens as the curvature of the input loss landscape grows. The per-sample
**first-order share** of the adversarial loss increase measures it:

    fo_share_i = eps · ‖∇ₓL(x_i)‖_* / (L(x_adv_i) − L(x_i))

with ‖·‖_* the dual norm of the threat model (L1 for an L∞ attack, L2 for an L2 attack), so that the
numerator is the largest loss increase a first-order (linear) model of the loss predicts inside the eps
ball. A share near 1 means the gradient explains the increase; a share below 1 means the increase comes
from curvature (higher-order terms); above 1 the attack found less than the linear prediction (a concave
loss along the path, or an attack stopped short, e.g. by the [0,1] box, since ``eps`` is the nominal radius).

Tiny denominators: the ratio is undefined when the attack did not raise the loss measurably. Where
``L(x_adv) − L(x) < min_increase`` (default :data:`MIN_INCREASE` = 1e-4 nats, well above float32
rounding of losses of order 1) the value is **NaN**; summaries (``*_mean`` etc. in trajectory tables) use
the finite values only and the NaNs are not counted as numerical failures (``undefined_ok``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .._base import eval_mode, frozen_params, per_sample_loss
from ..attacks import _check_eps, _check_norm
from ._autograd import check_like, loss_logits_grad, prepare
from .spec import BatchContext, MeasureSpec

__all__ = ["FO_SHARE", "MIN_INCREASE", "first_order_share"]

MIN_INCREASE = 1e-4
"""Smallest adversarial loss increase (nats) for which the share is defined; below it the value is NaN."""


def _dual_norm(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """(B, ...) -> (B,): the norm dual to the attack's (L1 for L∞, L2 for L2)."""
    flat = grad.flatten(1)
    return flat.abs().sum(1) if norm == "linf" else flat.norm(dim=1)


def _first_order_share(grad: torch.Tensor, loss: torch.Tensor, loss_adv: torch.Tensor, *, eps: float, norm: str,
                       min_increase: float) -> torch.Tensor:
    """Unchecked core on tensors: grad (B, ...), loss (B,), loss_adv (B,) -> (B,), NaN where undefined."""
    increase = loss_adv - loss
    defined = increase >= min_increase
    share = eps * _dual_norm(grad, norm) / torch.where(defined, increase, torch.ones_like(increase))
    return torch.where(defined, share, torch.full_like(share, math.nan))


def first_order_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *, eps: float,
                      norm: str = "linf", min_increase: float = MIN_INCREASE) -> torch.Tensor:
    """Per-sample first-order share ``eps·‖∇ₓL(x)‖_* / (L(x_adv) − L(x))`` of the adversarial loss increase.

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) clean inputs in [0,1].
        y: (B,) integer labels.
        x_adv: (B, ...) adversarial inputs (e.g. from :func:`landscape.attacks.pgd` with the same ``eps``).
        eps: the attack's radius in [0,1] pixel units.
        norm: the attack's norm, ``"linf"`` (dual L1, the paper's IG) or ``"l2"`` (dual L2).
        min_increase: increases below this many nats give NaN (see the module docstring). Default 1e-4.

    Returns:
        (B,) tensor, detached; NaN where the loss increase is below ``min_increase``.

    Example:
        >>> model = create_model("mlp", hidden=(16,))
        >>> x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
        >>> from landscape.attacks import pgd
        >>> first_order_share(model, x, y, pgd(model, x, y, 0.1)[0], eps=0.1).shape
        torch.Size([4])
    """
    eps = _check_eps(eps)
    norm = _check_norm(norm).value
    if isinstance(min_increase, bool) or not isinstance(min_increase, (int, float)) or not min_increase > 0:
        raise ValueError(f"min_increase must be a number > 0, got {min_increase!r}")
    x, y = prepare(model, x, y)
    x_adv = check_like(x_adv, x, "x_adv")
    with eval_mode(model), frozen_params(model):
        loss, _, grad = loss_logits_grad(model, x, y)
        with torch.no_grad():
            loss_adv = per_sample_loss(model(x_adv), y)
    return _first_order_share(grad, loss, loss_adv, eps=eps, norm=norm, min_increase=float(min_increase))


# ------------------------------------------------------------------------------- registry entry

def _fo_share_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    s = ctx.settings
    return {"fo_share": _first_order_share(ctx.grad, ctx.loss, ctx.loss_adv, eps=s.eps, norm=s.norm,
                                           min_increase=MIN_INCREASE)}


FO_SHARE = MeasureSpec(
    "fo_share", ("fo_share",), _fo_share_measure, "first-order share of the adv. loss increase",
    "eps‖∇ₓL‖_* / ΔL", undefined_ok=True,
    paper="the gradient-regularisation effect of AT (abstract, second finding): first-order term over the "
          "adversarial loss increase")
