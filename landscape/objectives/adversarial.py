"""The PGD adversarial-training family: PGD-AT and the objectives built on its ``x_adv``.

``x_adv`` is :func:`landscape.attacks.pgd` with the model in training mode, as in the official loops. With
``clean_first=True`` the clean forward pass runs before the attack, as in the official code, so batch-norm
running statistics see the clean batch first; the clean logits of that pass are the ones AdvLC and the
decomposition use. The PGD start is ``pgd_start`` (``"clean"``, ``"random"``, ``"grad"``; None: from
``random_start``). ``"grad"`` is the official AT/AdvLC loop's actual start ``x + ∇ₓ mean CE(f(x), y)`` (its
``pgd(..., max_iter, ig)`` call passes the clean input gradient positionally into ``pert``); with
``clean_first`` that gradient comes from the same clean pass, as there.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import pgd
from ..regularizers import advlc, input_gradient_penalty

__all__ = ["CLEAN_LOGIT_METHODS", "clean_pass", "pgd_examples", "at_loss"]

#: methods whose outer loss uses the clean logits (reused from the clean-first pass).
CLEAN_LOGIT_METHODS = ("at_decomposed", "at_advlc")


def clean_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str, need_grad: bool):
    """The official loop's clean forward pass before the attack: ``(logits or None, input grad or None)``.

    Logits are kept (with their graph) for :data:`CLEAN_LOGIT_METHODS`; the batch-mean CE input gradient is
    returned when ``need_grad`` (the ``"grad"`` PGD start). Otherwise a no-grad pass that only updates the
    batch-norm statistics, as the official order does.
    """
    keep = method in CLEAN_LOGIT_METHODS
    if not keep and not need_grad:
        with torch.no_grad():
            model(x)
        return None, None
    inp = x.detach().requires_grad_(True) if need_grad else x
    with torch.enable_grad():
        logits = model(inp)
        grad = None
        if need_grad:
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), inp, retain_graph=keep)
    return (logits if keep else None), (None if grad is None else grad.detach())


def pgd_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                 step_size: float | None, norm: str, start: str, seed: int, method: str, clean_first: bool):
    """``(x_adv, clean logits or None)`` of the PGD family's training attack (module docstring)."""
    logits_clean, grad = (None, None)
    if clean_first:
        logits_clean, grad = clean_pass(model, x, y, method=method, need_grad=start == "grad")
    x_adv, _ = pgd(model, x, y, eps, steps=steps, step_size=step_size, norm=norm, start=start, seed=seed,
                   train_mode=True, start_grad=grad)
    return x_adv, logits_clean


def at_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *, method: str,
            lam: float = 0.0, top: float = 0.1, grad_norm: str = "l1", clean_weight: float = 1.0,
            excess_weight: float = 1.0, logits_clean: torch.Tensor | None = None) -> torch.Tensor:
    """() outer loss of ``pgd_at``/``awp_at``, ``at_decomposed``, ``at_advlc``, ``at_gradreg`` at ``x_adv``."""
    loss_adv = F.cross_entropy(logits_adv := model(x_adv), y)
    if method in ("pgd_at", "awp_at"):
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
    raise ValueError(f"{method!r} is not a PGD-family method")
