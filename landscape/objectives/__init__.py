"""Training objectives: the loss of one batch for each training method, one module per method family.

=====================  ===========================================================================
``standard``           CE(f(x), y)
``standard_gradreg``   CE(f(x), y) + λ · mean_i ‖∇ₓ CE(f(x_i), y_i)‖  (no adversarial examples)
``pgd_at``             CE(f(x_adv), y)  (PGD adversarial training, Madry et al. 2018)
``at_decomposed``      w_c · CE(f(x), y) + w_e · [CE(f(x_adv), y) − CE(f(x), y)]
``at_advlc``           CE(f(x_adv), y) + λ · AdvLC(f(x), f(x_adv))  (Li & Spratling 2023)
``at_gradreg``         CE(f(x_adv), y) + λ · mean_i ‖∇ₓ CE(f(x_i), y_i)‖  (AT + input-gradient reg.)
``trades``             CE(f(x), y) + β · KL(p(x) ‖ p(x'))  (Zhang et al. 2019; :mod:`.trades`)
``mart``               BCE(p(x'), y) + β · KL(p(x) ‖ p(x'))·(1 − p_y(x))  (Wang et al. 2020; :mod:`.trades`)
``awp_at``             ``pgd_at`` at adversarially perturbed weights w + v (Wu et al. 2020; :mod:`.awp`)
``awp_trades``         ``trades`` at w + v (:mod:`.awp`)
``cure``               CE(f(x), y) + λ · ‖∇ℓ(x + h·z) − ∇ℓ(x)‖²  (Moosavi-Dezfooli et al. 2019; :mod:`.smoothness`)
``llr``                ℓ(x) + λ · g(δ; x) + μ · |δᵀ∇ℓ(x)|  (Qin et al. 2019; :mod:`.smoothness`)
=====================  ===========================================================================

:data:`DEFAULT_LAM` holds each method's published weight (λ or β); :data:`DEFAULT_PARAMS` its other published
hyper-parameters (AWP's γ, CURE's h, LLR's μ). Sources: docs/training.md, "Methods and their defaults".

The PGD family (:mod:`.adversarial`) attacks with :func:`landscape.attacks.pgd` in training mode; TRADES and
MART use their own inner maximisations (KL / CE from ``x + 0.001·N(0,1)``, eval mode, as their codes); LLR
maximises its local-linearity gap; CURE has no inner maximisation. Every step size is the training
``step_size`` (default ``2.5·eps/steps``) and every inner loop runs ``steps`` steps, so methods compared at
"equal PGD steps" do equal inner work. Randomness comes from ``seed`` only.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import resolve_start
from ..regularizers import loss_and_gradient_penalty

__all__ = ["METHODS", "ADVERSARIAL_METHODS", "AWP_METHODS", "DEFAULT_LAM", "DEFAULT_PARAMS", "batch_loss",
           "adversarial_inputs", "outer_loss"]

METHODS = ("standard", "standard_gradreg", "pgd_at", "at_decomposed", "at_advlc", "at_gradreg", "trades", "mart",
           "awp_at", "awp_trades", "cure", "llr")
#: methods that train on adversarial examples (and so need eps > 0).
ADVERSARIAL_METHODS = ("pgd_at", "at_decomposed", "at_advlc", "at_gradreg", "trades", "mart", "awp_at",
                       "awp_trades", "llr")
#: methods whose training attack is :func:`landscape.attacks.pgd` (``pgd_start`` applies to them).
PGD_METHODS = ("pgd_at", "at_decomposed", "at_advlc", "at_gradreg", "awp_at")
#: methods with an adversarial weight perturbation.
AWP_METHODS = ("awp_at", "awp_trades")
#: regularisation weight used when ``lam=None`` (λ, or TRADES/MART's β).
DEFAULT_LAM = {"standard": 0.0, "standard_gradreg": 0.1, "pgd_at": 0.0, "at_decomposed": 0.0,
               "at_advlc": 0.3, "at_gradreg": 0.1,
               "trades": 6.0,       # Zhang et al. 2019, CIFAR-10 β = 6 (1/λ)
               "mart": 6.0,         # Wang et al. 2020, official --beta 6.0
               "awp_at": 0.0,       # the PGD-AT loss, no weight
               "awp_trades": 6.0,   # TRADES-AWP code --beta 6.0
               "cure": 4.0,         # Moosavi-Dezfooli et al. 2019, λ = 4
               "llr": 4.0}          # Qin et al. 2019, CIFAR-10 λ = 4
#: other published hyper-parameters, by setting name -> {method: default}.
DEFAULT_PARAMS = {
    "awp_gamma": {"awp_at": 5e-3, "awp_trades": 5e-3},  # Wu et al. 2020, γ = 5e-3
    "cure_h": {"cure": 1.5 / 255},                       # h = 1.5 on [0,255] pixels (CIFAR-10) -> [0,1]
    "llr_mu": {"llr": 3.0},                              # Qin et al. 2019, CIFAR-10 μ = 3
}


def method_params(method: str, **given) -> dict:
    """``{awp_gamma, cure_h, llr_mu}`` for ``method``: the given value, else the published default where the
    method uses it, else None (the method ignores it)."""
    return {k: (given.get(k) if given.get(k) is not None else table.get(method)) if method in table else None
            for k, table in DEFAULT_PARAMS.items()}


def adversarial_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str, eps: float,
                       steps: int = 10, step_size: float | None = None, norm: str = "linf",
                       random_start: bool = True, pgd_start: str | None = None, clean_first: bool = False,
                       seed: int = 0):
    """``(x_adv, clean logits or None)``: the method's inner maximisation (``x_adv`` detached, (B, ...))."""
    alpha = 2.5 * eps / steps if step_size is None else step_size
    if method in PGD_METHODS:
        from .adversarial import pgd_examples

        return pgd_examples(model, x, y, eps=eps, steps=steps, step_size=step_size, norm=norm,
                            start=resolve_start(pgd_start, random_start), seed=seed, method=method,
                            clean_first=clean_first)
    if method in ("trades", "awp_trades"):
        from .trades import trades_attack

        return trades_attack(model, x, eps=eps, steps=steps, step_size=alpha, norm=norm, seed=seed), None
    if method == "mart":
        from .trades import mart_attack

        return mart_attack(model, x, y, eps=eps, steps=steps, step_size=alpha, norm=norm, seed=seed), None
    if method == "llr":
        from .smoothness import llr_attack

        return llr_attack(model, x, y, eps=eps, steps=steps, step_size=alpha, norm=norm, seed=seed), None
    raise ValueError(f"method {method!r} has no inner maximisation (adversarial: {', '.join(ADVERSARIAL_METHODS)})")


def outer_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None, *, method: str,
               lam: float = 0.0, top: float = 0.1, grad_norm: str = "l1", clean_weight: float = 1.0,
               excess_weight: float = 1.0, logits_clean: torch.Tensor | None = None, awp_gamma: float | None = None,
               cure_h: float | None = None, llr_mu: float | None = None) -> torch.Tensor:
    """() the method's loss given its adversarial inputs ``x_adv`` (None for non-adversarial methods).

    For the AWP methods this is the loss at the perturbed weights ``w + v`` (:mod:`.awp`), with the gradient
    at ``w + v`` flowing to ``w``; the model's weights are not changed.
    """
    p = method_params(method, awp_gamma=awp_gamma, cure_h=cure_h, llr_mu=llr_mu)
    if method == "standard":
        return F.cross_entropy(model(x), y)
    if method == "standard_gradreg":
        loss, penalty = loss_and_gradient_penalty(model, x, y, norm=grad_norm)
        return loss + lam * penalty
    if method == "cure":
        from .smoothness import cure_loss

        return cure_loss(model, x, y, lam=lam, h=p["cure_h"])
    if method == "llr":
        from .smoothness import llr_loss

        return llr_loss(model, x, y, x_adv, lam=lam, mu=p["llr_mu"])
    if method in ("trades", "mart"):
        from .trades import mart_loss, trades_loss

        return (trades_loss if method == "trades" else mart_loss)(model, x, y, x_adv, beta=lam)
    if method in AWP_METHODS:
        from .awp import perturbed_loss

        inner = "pgd_at" if method == "awp_at" else "trades"
        return perturbed_loss(model, lambda m: outer_loss(m, x, y, x_adv, method=inner, lam=lam),
                              p["awp_gamma"])
    if method in PGD_METHODS:
        from .adversarial import at_loss

        return at_loss(model, x, y, x_adv, method=method, lam=lam, top=top, grad_norm=grad_norm,
                       clean_weight=clean_weight, excess_weight=excess_weight, logits_clean=logits_clean)
    raise ValueError(f"unknown method {method!r} (allowed: {', '.join(METHODS)})")


def batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str, eps: float = 0.0,
               steps: int = 10, step_size: float | None = None, norm: str = "linf", lam: float = 0.0,
               top: float = 0.1, grad_norm: str = "l1", clean_weight: float = 1.0, excess_weight: float = 1.0,
               random_start: bool = True, clean_first: bool = False, seed: int = 0, pgd_start: str | None = None,
               awp_gamma: float | None = None, cure_h: float | None = None,
               llr_mu: float | None = None) -> torch.Tensor:
    """The training loss of one batch (model in training mode): () scalar with a graph to the parameters.

    Args:
        model: classifier (B, ...) -> (B, K), in the mode it should be trained in.
        x: (B, ...) inputs in [0,1]. y: (B,) labels.
        method: one of :data:`METHODS` (table in the module docstring).
        eps, steps, step_size, norm: the training attack / inner maximisation (``step_size`` None:
            ``2.5·eps/steps``).
        lam: regularisation weight (AdvLC, gradient penalty, CURE, LLR λ; TRADES/MART β).
        top: AdvLC fraction of entries kept.
        grad_norm: gradient penalty ``"l1"`` (‖g‖₁) or ``"l2sq"`` (‖g‖₂²).
        clean_weight, excess_weight: w_c and w_e of ``at_decomposed``.
        random_start: start PGD from a uniform point in the eps ball (used when ``pgd_start`` is None).
        clean_first: the clean forward pass runs before the attack (official order; PGD family).
        seed: seeds the random starts.
        pgd_start: ``"clean"``, ``"random"`` or ``"grad"`` (the official loop's ``x + ∇ₓ mean CE``); PGD family.
        awp_gamma, cure_h, llr_mu: AWP's γ, CURE's h (in [0,1] units), LLR's μ; None: the published default
            (:data:`DEFAULT_PARAMS`).

    Raises:
        ValueError: unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (allowed: {', '.join(METHODS)})")
    x_adv, logits_clean = None, None
    if method in ADVERSARIAL_METHODS:
        x_adv, logits_clean = adversarial_inputs(model, x, y, method=method, eps=eps, steps=steps,
                                                 step_size=step_size, norm=norm, random_start=random_start,
                                                 pgd_start=pgd_start, clean_first=clean_first, seed=seed)
    return outer_loss(model, x, y, x_adv, method=method, lam=lam, top=top, grad_norm=grad_norm,
                      clean_weight=clean_weight, excess_weight=excess_weight, logits_clean=logits_clean,
                      awp_gamma=awp_gamma, cure_h=cure_h, llr_mu=llr_mu)
