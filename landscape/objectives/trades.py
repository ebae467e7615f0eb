"""The KL family: TRADES (Zhang et al., ICML 2019) and MART (Wang et al., ICLR 2020).

TRADES: ``CE(f(x), y) + β · KL(p(x) ‖ p(x'))`` (batch mean), with ``x'`` the maximiser of
``Σᵢ KL(p(xᵢ) ‖ p(xᵢ'))`` found by signed-gradient ascent from ``x + 0.001·N(0, 1)``, the model in eval mode
(yaodongyu/TRADES ``trades.py``). Published default ``β = 6`` (paper Sec. 5, CIFAR-10; the code's ``--beta``).

MART: ``BCE(p(x'), y) + β · (1/B) Σᵢ KL(p(xᵢ) ‖ p(xᵢ')) · (1 − p_y(xᵢ))`` with the boosted cross-entropy
``BCE = −log p_y(x') − log(1 − max_{k≠y} p_k(x'))`` and ``x'`` from PGD on the cross-entropy started at
``x + 0.001·N(0, 1)`` in eval mode (YisenWang/MART ``mart.py``, ``train_wideresnet.py``). Published default
``β = 6`` (the code's ``--beta``; the paper's λ). The small constants of the official code — ``log(1.0001 − p
+ 1e-12)``, ``log(p' + 1e-12)`` inside the KL, weight ``1.0000001 − p_y`` — are kept: they are what was run.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._ascent import ascend, gaussian_start

__all__ = ["trades_attack", "trades_loss", "mart_attack", "mart_loss"]


def _kl_clean_adv(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """(B,) ``KL(p(x) ‖ p(x'))`` per sample, as ``F.kl_div(log_softmax(adv), softmax(clean))``."""
    return F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_clean, 1), reduction="none").sum(1)


def trades_attack(model: nn.Module, x: torch.Tensor, *, eps: float, steps: int, step_size: float,
                  norm: str = "linf", seed: int = 0) -> torch.Tensor:
    """TRADES inner maximisation: (B, ...) ``x'`` maximising ``Σᵢ KL(p(xᵢ) ‖ p(xᵢ'))`` (model in eval mode)."""
    with torch.no_grad(), _eval(model):
        target = F.softmax(model(x), 1)

    def objective(inp):
        return F.kl_div(F.log_softmax(model(inp), 1), target, reduction="sum")

    return ascend(model, objective, x, gaussian_start(x, seed), eps=eps, steps=steps, step_size=step_size,
                  norm=norm, train_mode=False, box_start=False)


def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
                beta: float) -> torch.Tensor:
    """() ``CE(f(x), y) + β · mean_i KL(p(xᵢ) ‖ p(xᵢ'))`` at the given ``x_adv``, differentiable in the weights."""
    logits_clean = model(x)
    return F.cross_entropy(logits_clean, y) + beta * _kl_clean_adv(logits_clean, model(x_adv)).mean()


def mart_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                step_size: float, norm: str = "linf", seed: int = 0) -> torch.Tensor:
    """MART inner maximisation: PGD on the batch-mean cross-entropy from ``x + 0.001·N(0, 1)``, eval mode."""
    return ascend(model, lambda inp: F.cross_entropy(model(inp), y), x, gaussian_start(x, seed), eps=eps,
                  steps=steps, step_size=step_size, norm=norm, train_mode=False, box_start=False)


def mart_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
              beta: float) -> torch.Tensor:
    """() MART loss at the given ``x_adv`` (module docstring), differentiable in the weights."""
    logits_adv = model(x_adv)
    p_adv = F.softmax(logits_adv, 1)
    # the most likely wrong class at x'
    top2 = p_adv.argsort(1)[:, -2:]
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boosted = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), wrong)
    p_clean = F.softmax(model(x), 1)
    p_true = p_clean.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(p_adv + 1e-12), p_clean, reduction="none").sum(1)
    return boosted + beta * (kl * (1.0000001 - p_true)).sum() / x.shape[0]


def _eval(model: nn.Module):
    from .._base import eval_mode

    return eval_mode(model)
