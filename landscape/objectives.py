"""Training objectives: the loss of one batch for each training method.

=====================  ===========================================================================
``standard``           CE(f(x), y)
``standard_gradreg``   CE(f(x), y) + λ · mean_i ‖∇ₓ CE(f(x_i), y_i)‖  (standard training + input-gradient
                       regularisation, no adversarial examples)
``pgd_at``             CE(f(x_adv), y)  (PGD adversarial training, Madry et al. 2018)
``at_decomposed``      w_c · CE(f(x), y) + w_e · [CE(f(x_adv), y) − CE(f(x), y)]: AT split into its clean
                       term and its adversarial excess (w_c = w_e = 1 is ``pgd_at``; w_c = 0 trains on the
                       excess alone, w_e = 0 is standard training)
``at_advlc``           CE(f(x_adv), y) + λ · AdvLC(f(x), f(x_adv))  (Li & Spratling 2023)
``at_gradreg``         CE(f(x_adv), y) + λ · mean_i ‖∇ₓ CE(f(x_i), y_i)‖  (AT + input-gradient reg.)
=====================  ===========================================================================

The decomposition and standard training + gradient regularisation isolate the causes the paper names:
the clean-loss term (claim 1) and the gradient-regularisation effect of AT (claims 2 and 3).

``x_adv`` is PGD with the model in training mode, as in the official loops. With ``clean_first=True`` the
clean forward pass runs before the attack, as in the official code, so batch-norm running statistics see
the clean batch first; the clean logits of that pass are the ones AdvLC and the decomposition use. (The
official code also reuses that pass's input gradient as the attack's first step; recomputing it gives the
same gradient in training mode, at the cost of one extra batch-norm statistics update.)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .regularizers import advlc, input_gradient_penalty, loss_and_gradient_penalty

__all__ = ["METHODS", "ADVERSARIAL_METHODS", "DEFAULT_LAM", "batch_loss"]

METHODS = ("standard", "standard_gradreg", "pgd_at", "at_decomposed", "at_advlc", "at_gradreg")
#: methods that train on adversarial examples (and so need eps > 0).
ADVERSARIAL_METHODS = ("pgd_at", "at_decomposed", "at_advlc", "at_gradreg")
#: regularisation weight used when ``lam=None``.
DEFAULT_LAM = {"standard": 0.0, "standard_gradreg": 0.1, "pgd_at": 0.0, "at_decomposed": 0.0,
               "at_advlc": 0.3, "at_gradreg": 0.1}


def batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str, eps: float = 0.0,
               steps: int = 10, step_size: float | None = None, norm: str = "linf", lam: float = 0.0,
               top: float = 0.1, grad_norm: str = "l1", clean_weight: float = 1.0, excess_weight: float = 1.0,
               random_start: bool = True, clean_first: bool = False, seed: int = 0) -> torch.Tensor:
    """The training loss of one batch (model in training mode): () scalar with a graph to the parameters.

    Args:
        model: classifier (B, ...) -> (B, K), in the mode it should be trained in.
        x: (B, ...) inputs in [0,1]. y: (B,) labels.
        method: one of :data:`METHODS` (table in the module docstring).
        eps, steps, step_size, norm: the training PGD attack (``step_size`` None: ``2.5·eps/steps``).
        lam: regularisation weight (AdvLC or gradient penalty). top: AdvLC fraction of entries kept.
        grad_norm: gradient penalty ``"l1"`` (‖g‖₁) or ``"l2sq"`` (‖g‖₂²).
        clean_weight, excess_weight: w_c and w_e of ``at_decomposed``.
        random_start: start PGD from a uniform point in the eps ball (the official AT/AdvLC code does not).
        clean_first: the clean forward pass runs before the attack (official order).
        seed: seeds the PGD random start.
    """
    if method == "standard":
        return F.cross_entropy(model(x), y)
    if method == "standard_gradreg":
        loss, penalty = loss_and_gradient_penalty(model, x, y, norm=grad_norm)
        return loss + lam * penalty
    from .attacks import pgd

    logits_clean = model(x) if clean_first and method in ("at_decomposed", "at_advlc") else None
    if clean_first and logits_clean is None:
        with torch.no_grad():  # the official order: batch-norm statistics see the clean batch first
            model(x)
    x_adv, _ = pgd(model, x, y, eps, steps=steps, step_size=step_size, norm=norm, random_start=random_start,
                   seed=seed, train_mode=True)
    loss_adv = F.cross_entropy(logits_adv := model(x_adv), y)
    if method == "pgd_at":
        return loss_adv
    if method == "at_decomposed":
        loss_clean = F.cross_entropy(model(x) if logits_clean is None else logits_clean, y)
        return clean_weight * loss_clean + excess_weight * (loss_adv - loss_clean)
    if method == "at_advlc":
        if lam == 0:
            return loss_adv
        return loss_adv + lam * advlc(model(x) if logits_clean is None else logits_clean, logits_adv, top=top)
    if method == "at_gradreg":
        return loss_adv + lam * input_gradient_penalty(model, x, y, norm=grad_norm) if lam > 0 else loss_adv
    raise ValueError(f"unknown method {method!r} (allowed: {', '.join(METHODS)})")
