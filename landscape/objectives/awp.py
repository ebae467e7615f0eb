"""Adversarial weight perturbation (AWP; Wu, Xia & Wang, NeurIPS 2020), on top of PGD-AT or TRADES.

One ascent step in weight space, relative per layer: for every weight tensor with more than one dimension
(convolution and linear weights; biases and batch-norm parameters are not perturbed)

    vₗ = γ · ‖wₗ‖ / ‖gₗ‖ · gₗ,    gₗ = ∇_{wₗ} L(w; x', y)

where ``L`` is the method's own outer loss at its adversarial inputs ``x'`` (PGD-AT: ``CE(f(x'), y)``;
TRADES: ``CE(f(x), y) + β·KL``). This is the official proxy construction (csdongxian/AWP ``utils_awp.py``: a
copy of the model takes one SGD step on ``−L``, ``diff = ‖w‖/‖Δw‖ · Δw``, perturbation ``γ·diff``): the
proxy's learning rate cancels in the normalisation. The batch-norm running statistics of that proxy pass are
discarded, as a separate proxy model leaves the trained model's untouched. The training gradient is then
``∇_w L(w + v; x', y)``, applied to ``w``.

Published default: ``γ = 5·10⁻³`` (the AWP paper's setting; ``--awp-gamma 0.005`` in the TRADES-AWP code).
Not reproduced: the TRADES-AWP code's ``--awp-warmup 10`` (AWP from epoch 10 of 200); here AWP is applied
from the first epoch.

Exact restoration: the perturbed weights are never written into the model. The outer loss is evaluated with
``torch.func.functional_call`` on ``w + v`` (``v`` a constant), so its gradient with respect to ``w`` *is*
the gradient at ``w + v``, and the model's weights stay bit-identical until ``optimizer.step()`` — the
official loop's perturb → backward → step → restore instead adds and subtracts ``γ·diff`` (equal up to
rounding) and applies the optimizer step (weight decay included) at ``w + v``; here weight decay sees ``w``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torch.func import functional_call

__all__ = ["AWP_EPS", "perturbed_names", "weight_perturbation", "perturbed_loss"]

#: the official ``EPS`` added to ‖Δw‖.
AWP_EPS = 1e-20


def perturbed_names(model: nn.Module) -> list[str]:
    """Names of the parameters AWP perturbs: those with more than one dimension (layer weights)."""
    return [n for n, p in model.named_parameters() if p.dim() > 1 and p.requires_grad]


def weight_perturbation(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor],
                        gamma: float) -> dict[str, torch.Tensor]:
    """``{name: vₗ}`` (detached) for the weights of :func:`perturbed_names`; ``loss_fn(model)`` is the outer
    loss at the current weights. Buffers (batch-norm statistics) are restored after that pass; no ``.grad``
    is left on the parameters."""
    names = perturbed_names(model)
    params = dict(model.named_parameters())
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    try:
        with torch.enable_grad():
            grads = torch.autograd.grad(loss_fn(model), [params[n] for n in names], allow_unused=True)
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
    out = {}
    for n, g in zip(names, grads):
        w = params[n].detach()
        g = torch.zeros_like(w) if g is None else g.detach()
        out[n] = gamma * w.norm() / (g.norm() + AWP_EPS) * g
    return out


class _Perturbed(nn.Module):
    """``model`` called with ``w + v`` in place of its weights (a graph to ``w``; ``w`` itself unchanged)."""

    def __init__(self, model: nn.Module, v: dict[str, torch.Tensor]):
        super().__init__()
        self.model, self.v = model, v

    def forward(self, *args):
        params = {n: p + self.v[n] if n in self.v else p for n, p in self.model.named_parameters()}
        return functional_call(self.model, params, args)


def perturbed_loss(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor],
                   gamma: float) -> torch.Tensor:
    """() ``L(w + v)`` with v from :func:`weight_perturbation`, differentiable in ``w`` (gradient at ``w + v``)."""
    v = weight_perturbation(model, loss_fn, gamma)
    proxy = _Perturbed(model, v)
    proxy.train(model.training)
    return loss_fn(proxy)
