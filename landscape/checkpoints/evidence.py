"""Deciding between wirings whose keys are identical by what each computes on a small labelled batch.

Two wirings of one family can share every key and shape (``preact_resnet18_rice`` and ``_advlc`` differ only in
what a shortcut conv sees). Weights trained in one wiring classify well in that wiring and worse in the other, so
the clean accuracy of each candidate on a few labelled samples ("evidence") tells them apart; for untrained
weights it does not, and then nothing is decided.

**Clearly better** (``clearly_better``): wiring A beats wiring B on ``n`` samples when all three hold:

* A classifies at least ``MIN_POINTS`` (10) percentage points more of the samples correctly than B;
* that is at least ``MIN_SAMPLES`` (3) samples;
* McNemar's exact test on the samples the two classify differently rejects "equally good": with ``b`` samples
  only A gets right and ``c`` only B gets right, ``P(Binomial(b + c, 1/2) >= b) <= ALPHA`` (0.01, one-sided).

The first two keep a small but significant difference on a large batch from deciding; the test keeps luck on a
small batch from deciding (with 10 samples nothing can be decided: even 3 of 3 disagreements give p = 0.125).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn as nn

from .._base import correct_predictions, eval_mode, model_device

__all__ = ["ALPHA", "MIN_POINTS", "MIN_SAMPLES", "accuracy_text", "check_evidence", "clearly_better", "correct",
           "mcnemar_p", "pick"]

MIN_POINTS = 10.0
MIN_SAMPLES = 3
ALPHA = 0.01


def check_evidence(evidence: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` as tensors: x (N, ...) float in [0,1], y (N,) integer labels, N >= 1.

    Raises:
        TypeError, ValueError: anything else, in one line.
    """
    if not (isinstance(evidence, (tuple, list)) and len(evidence) == 2):
        raise TypeError(f"evidence must be a pair (x, y) of tensors, got {type(evidence).__name__}")
    x, y = (torch.as_tensor(v) for v in evidence)
    if not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"evidence x must be a float tensor (N, C, H, W) in [0,1], got {x.dtype} {tuple(x.shape)}")
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool or len(y) != len(x) or len(y) == 0:
        raise ValueError(f"evidence y must hold one integer label per sample of x ({len(x)}), got {y.dtype} "
                         f"{tuple(y.shape)}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError("evidence x must be inputs in [0,1] (mean/std are the loader's to apply), got values in "
                         f"[{x.min().item():.3g}, {x.max().item():.3g}]")
    return x, y.long()


@torch.no_grad()
def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Boolean (N,) on CPU: which samples ``model`` (in eval mode; its own modes restored) classifies correctly."""
    device = model_device(model)
    with eval_mode(model):
        out = [correct_predictions(model(x[i:i + batch_size].to(device)), y[i:i + batch_size].to(device)).cpu()
               for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """One-sided exact McNemar p-value: ``P(Binomial(only_a + only_b, 1/2) >= only_a)``."""
    m = only_a + only_b
    if m == 0:
        return 1.0
    return sum(math.comb(m, k) for k in range(only_a, m + 1)) / 2 ** m


def clearly_better(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the wiring with per-sample correctness ``a`` is clearly better than the one with ``b`` (see the
    module docstring for the rule)."""
    n = len(a)
    gap = int(a.sum()) - int(b.sum())
    if gap < MIN_SAMPLES or 100.0 * gap / n < MIN_POINTS:
        return False
    return mcnemar_p(int((a & ~b).sum()), int((~a & b).sum())) <= ALPHA


def pick(results: Mapping[str, torch.Tensor]) -> str | None:
    """The candidate clearly better than every other one, else None. ``results``: name -> per-sample correctness."""
    ranked = sorted(results, key=lambda k: -int(results[k].sum()))
    best = ranked[0]
    return best if len(ranked) > 1 and all(clearly_better(results[best], results[o]) for o in ranked[1:]) else None


def accuracy_text(results: Mapping[str, torch.Tensor]) -> str:
    """``preact_resnet18_advlc 117/128 (91.4%), preact_resnet18_rice 31/128 (24.2%)``, best first."""
    ranked = sorted(results, key=lambda k: -int(results[k].sum()))
    n = len(next(iter(results.values())))
    return ", ".join(f"{k} {int(results[k].sum())}/{n} ({100.0 * int(results[k].sum()) / n:.1f}%)" for k in ranked)
