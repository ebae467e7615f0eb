"""Training-time regularisers of the input loss landscape.

- :func:`advlc` — the AdvLC term of Li & Spratling (Pattern Recognition 2023), "Understanding and
  Combating Robust Overfitting via Input Loss Landscape Analysis and Regularization": the sum of the
  largest ``top`` fraction of all ``|f(x_adv) - f(x)|`` logit entries in the batch, divided by the batch
  size. The loss of AT+AdvLC is ``CE(f(x_adv), y) + lam * advlc(f(x), f(x_adv))`` with ``lam`` about 0.3.
- :func:`input_gradient_penalty` — the mean per-sample norm of the clean input gradient ``∇ₓ CE(f(x), y)``
  (double backpropagation), the classic input-gradient regulariser the paper compares with;
  :func:`loss_and_gradient_penalty` returns the clean cross-entropy of the same forward pass beside it
  (standard training + gradient regularisation needs both).

Matches the official code (``src/utils/train.py`` of TreeLLi/Combating-RO-AdvLC): ``k = int(top · B · K)``
entries of ``|f(x) − f(x_adv)|`` over the whole batch, summed, divided by B. The one difference: when
``top · B · K < 1`` the official ``k`` is 0 (a zero regulariser); here it is 1.

Both return a differentiable scalar: call ``.backward()`` on a loss that contains them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._base import check_batch, check_labels_fit
from .measures.taylor import logit_variation_batch

__all__ = ["GRADIENT_NORMS", "advlc", "input_gradient_penalty", "loss_and_gradient_penalty"]

GRADIENT_NORMS = ("l1", "l2sq")


def advlc(logits_clean: torch.Tensor, logits_adv: torch.Tensor, top: float = 0.1) -> torch.Tensor:
    """AdvLC logit-variation regulariser: top-``top`` |Δlogit| entries of the batch, summed, / batch size.

    With ``D = |logits_adv - logits_clean|`` of shape (B, K), the value is
    ``sum(topk(D.flatten(), k)) / B`` with ``k = max(1, int(top * B * K))`` — the batch-level selection of
    the paper's official code (not a per-sample top-k). One implementation:
    :func:`landscape.measures.taylor.logit_variation_batch`, named here for training code.

    Args:
        logits_clean: (B, K) logits at the clean inputs.
        logits_adv: (B, K) logits at the adversarial inputs.
        top: fraction in (0, 1] of the B·K entries that are kept. Default 0.1.

    Returns:
        () scalar tensor, differentiable with respect to both inputs; 0 when the logits are equal.

    Raises:
        TypeError: the logits are not floating-point tensors.
        ValueError: shapes differ or are not (B, K) with B, K > 0; ``top`` outside (0, 1].

    Example:
        >>> advlc(torch.zeros(2, 3), torch.tensor([[1., -2., 0.], [0., 0., 3.]]), top=0.5)
        tensor(3.)
    """
    return logit_variation_batch(logits_clean, logits_adv, top)


def input_gradient_penalty(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """Mean over the batch of the norm of the per-sample clean input gradient, kept differentiable.

    ``g_i = ∇ₓ CE(f(x_i), y_i)`` is taken with ``create_graph=True`` (double backpropagation), so the
    returned value can be back-propagated into the model's parameters. The model is used in whatever
    train/eval mode it is in (training loops call this in train mode) and its mode is not changed.
    For models whose samples do not interact (no batch-norm in train mode) ``g_i`` is exactly the
    per-sample gradient.

    Args:
        model: classifier mapping (B, ...) inputs to (B, K) logits.
        x: (B, ...) clean inputs in [0, 1].
        y: (B,) integer labels.
        norm: ``"l1"`` -> mean_i ‖g_i‖₁ (the paper's IG measure); ``"l2sq"`` -> mean_i ‖g_i‖₂².
            Default ``"l1"``.

    Returns:
        () scalar tensor with a graph to the model's parameters (when they require grad).

    Raises:
        ValueError: unknown ``norm``, bad batch, label out of range.
        TypeError: non-tensor or non-floating inputs, non-integer labels.
    """
    return loss_and_gradient_penalty(model, x, y, norm=norm)[1]


def loss_and_gradient_penalty(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                              norm: str = "l1") -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean_i CE(f(x_i), y_i), mean_i ‖g_i‖)`` from one forward pass, both differentiable.

    The objective of standard training + input-gradient regularisation is ``loss + lam · penalty``; sharing
    the forward pass keeps batch-norm running statistics updated once per batch, as in standard training.
    Arguments, mode handling and errors as :func:`input_gradient_penalty`.

    Returns:
        ``(loss, penalty)``: two () scalar tensors with graphs to the model's parameters.
    """
    if norm not in GRADIENT_NORMS:
        raise ValueError(f"unknown norm {norm!r} (allowed: {', '.join(GRADIENT_NORMS)})")
    x, y = check_batch(x, y)
    with torch.enable_grad():  # input gradients are needed even under an outer no_grad
        x = x.detach().clone().requires_grad_(True)
        logits = model(x)
        check_labels_fit(logits, y)
        # Sum (not mean) of per-sample losses, so each row of the gradient is that sample's own gradient.
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    grad = grad.flatten(1)
    per_sample = grad.abs().sum(1) if norm == "l1" else grad.pow(2).sum(1)
    return loss / x.shape[0], per_sample.mean()
