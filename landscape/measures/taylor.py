"""How far the loss and the logits move away from linear behaviour inside the perturbation ball.

* :func:`taylor_gap` — error of the first-order Taylor expansion of the loss along a perturbation,
  ``L(x+δ) − L(x) − ∇L(x)ᵀδ``; ≈ ``½ δᵀHδ`` for small δ.
* :func:`logit_variation` — per-sample size of the logit change under a perturbation (the quantity the
  AdvLC regulariser penalises), and :func:`logit_variation_batch` — the AdvLC batch scalar itself,
  Li & Spratling, Pattern Recognition 2023.

In float32 the Taylor gap of a very small δ is dominated by rounding (it subtracts numbers of size
``L(x)``); use a float64 model for δ below about 1e-3.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .._base import eval_mode, frozen_params, per_sample_loss
from ._autograd import check_like, loss_logits_grad, prepare
from .spec import BatchContext, MeasureSpec

__all__ = ["LOGIT_TOP", "LOGIT_VAR", "TAYLOR_GAP", "taylor_gap", "logit_variation", "logit_variation_batch"]

LOGIT_TOP = 0.1
"""Fraction of the logits kept by the ``logit_var`` column."""


def _check_top(top: float) -> float:
    if isinstance(top, bool) or not isinstance(top, (int, float)) or not 0 < top <= 1:
        raise ValueError(f"top must be a fraction in (0, 1], got {top!r}")
    return float(top)


def _check_logits(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> None:
    for name, t in (("logits_clean", logits_clean), ("logits_adv", logits_adv)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")
    if logits_clean.dim() != 2 or logits_clean.numel() == 0:
        raise ValueError(f"logits must have shape (B, K) with B, K > 0, got {tuple(logits_clean.shape)}")
    if logits_clean.shape != logits_adv.shape:
        raise ValueError(f"logits_clean {tuple(logits_clean.shape)} and logits_adv "
                         f"{tuple(logits_adv.shape)} must have the same shape")


def _per_sample_k(num_classes: int, top: float) -> int:
    """Entries kept per sample: ``max(1, ceil(top * K))`` (rounded to 12 digits so 0.1 * 10 is 1, not 2)."""
    return max(1, math.ceil(round(top * num_classes, 12)))


def _logit_variation(logits_clean: torch.Tensor, logits_adv: torch.Tensor, top: float) -> torch.Tensor:
    """Unchecked core of :func:`logit_variation` on logits: (B, K), (B, K) -> (B,)."""
    diff = (logits_adv - logits_clean).abs()
    return diff.topk(_per_sample_k(diff.shape[1], top), dim=1).values.sum(1)


def _taylor_gap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, *,
                loss: torch.Tensor, grad: torch.Tensor, loss_moved: torch.Tensor | None = None) -> torch.Tensor:
    """Unchecked core given the clean loss (B,) and gradient (B, ...) (and the loss at ``x + delta`` when it
    is known); model in eval mode, frozen."""
    if loss_moved is None:
        with torch.no_grad():
            loss_moved = per_sample_loss(model(x + delta), y)
    return loss_moved - loss - (grad * delta).flatten(1).sum(1)


def taylor_gap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """First-order Taylor error of each sample's loss along its perturbation.

    ``gap_i = CE(f(x_i + δ_i), y_i) − CE(f(x_i), y_i) − ∇ₓCE(f(x_i), y_i)ᵀ δ_i``. By Taylor's theorem
    ``gap_i = ½ δ_iᵀ H_i δ_i + O(‖δ_i‖³)``; a large gap at the adversarial δ means the loss bends sharply
    inside the eps ball. ``x + δ`` is evaluated as given (not clamped to [0,1]).

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) inputs.
        y: (B,) integer labels.
        delta: (B, ...) perturbations, e.g. ``x_adv - x``.

    Returns:
        (B,) tensor of gaps (0 where δ_i = 0), detached.
    """
    x, y = prepare(model, x, y)
    delta = check_like(delta, x, "delta")
    with eval_mode(model), frozen_params(model):
        loss, _, grad = loss_logits_grad(model, x, y)
        return _taylor_gap(model, x, y, delta, loss=loss, grad=grad)


def logit_variation(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, *, top: float = 0.1) -> torch.Tensor:
    """Per-sample logit variation: the sum of the largest ``top`` fraction of ``|f(x_adv) − f(x)|`` entries.

    For sample i with K classes, the ``k = max(1, ceil(top·K))`` largest entries of ``|f(x_adv_i) − f(x_i)|``
    are summed (k = 1 for 10 classes and ``top=0.1``: the largest logit change). This is a per-sample
    version of the AdvLC term, which selects over the whole batch instead (see
    :func:`logit_variation_batch`).

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) clean inputs.
        x_adv: (B, ...) perturbed inputs.
        top: fraction in (0, 1] of the K logits kept per sample. Default 0.1.

    Returns:
        (B,) tensor, >= 0, detached.
    """
    top = _check_top(top)
    x, _ = prepare(model, x, None, need_labels=False)
    x_adv = check_like(x_adv, x, "x_adv")
    with eval_mode(model), frozen_params(model), torch.no_grad():
        return _logit_variation(model(x), model(x_adv), top)


def logit_variation_batch(logits_clean: torch.Tensor, logits_adv: torch.Tensor, top: float = 0.1) -> torch.Tensor:
    """The AdvLC logit-variation term: top ``top`` fraction of all ``|Δlogit|`` entries of the batch, / B.

    With ``D = |logits_adv − logits_clean|`` of shape (B, K): ``sum(topk(D.flatten(), k)) / B`` with
    ``k = max(1, int(top · B · K))``, the convention of the paper's official code (selection over the
    whole batch, so samples with large changes contribute more than 10 % of their logits). Pure and
    differentiable: the AdvLC loss is ``CE(f(x_adv), y) + λ · logit_variation_batch(f(x), f(x_adv))``,
    λ ≈ 0.3.

    Args:
        logits_clean: (B, K) logits at the clean inputs.
        logits_adv: (B, K) logits at the perturbed inputs.
        top: fraction in (0, 1] of the B·K entries kept. Default 0.1.

    Returns:
        () scalar tensor, differentiable with respect to both inputs.

    Example:
        >>> logit_variation_batch(torch.zeros(2, 3), torch.tensor([[1., -2., 0.], [0., 0., 3.]]), top=0.5)
        tensor(3.)
    """
    _check_logits(logits_clean, logits_adv)
    top = _check_top(top)
    diff = (logits_adv - logits_clean).abs().flatten()
    k = max(1, int(top * diff.numel()))
    return diff.topk(k).values.sum() / logits_clean.shape[0]


# ------------------------------------------------------------------------------- registry entries

def _taylor_gap_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    # at the clean point x + delta is x_adv, whose loss the table has (one forward saved)
    moved = ctx.loss_adv if ctx.point == "clean" else None
    return {"taylor_gap": _taylor_gap(ctx.model, ctx.x, ctx.y, ctx.delta, loss=ctx.loss, grad=ctx.grad,
                                      loss_moved=moved)}


def _logit_var_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    return {"logit_var": _logit_variation(ctx.logits, ctx.logits_adv, LOGIT_TOP)}


TAYLOR_GAP = MeasureSpec("taylor_gap", ("taylor_gap",), _taylor_gap_measure, "Taylor gap (1st order)", "nats",
                         default=True, paper="")
LOGIT_VAR = MeasureSpec(
    "logit_var", ("logit_var",), _logit_var_measure, "logit variation (AdvLC term)", "logit units", default=True,
    paper="per-sample version of the AdvLC logit-variation term (the paper selects the top 10 % over the batch)")
