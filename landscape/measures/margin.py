"""The classification margin at the clean and the adversarial point.

``margin(x) = f_y(x) − max_{k≠y} f_k(x)``: the logit of the label minus the largest other logit. It is
positive exactly when the sample is classified correctly (ties count as wrong), and its size says how far
inside (or outside) the decision region the sample sits, in logit units. Per-sample histories of the margin at
``x_adv`` show when adversarial training starts to fit a sample (``landscape.attribution``). It reuses the
logits the table already holds, so it costs no extra forward or backward pass.

Registered as ``logit_margin`` (columns ``margin_clean``, ``margin_adv``): the name ``margin`` is the worked
example of docs/measures.md ("Adding a measure"), which tests/test_measures_registry.py registers itself.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .._base import eval_mode, frozen_params
from .._base import logit_margin as _logit_margin
from ._autograd import prepare
from .spec import BatchContext, MeasureSpec

__all__ = ["MARGIN", "logit_margin", "margin"]

COLUMNS = ("margin_clean", "margin_adv")
"""Column names of the ``margin`` measure: at x and at x_adv."""


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``logits[i, y_i] − max_{k≠y_i} logits[i, k]`` for (B, K) logits and (B,) labels -> (B,), detached.

    Raises:
        ValueError: fewer than 2 classes, or shapes that do not match.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (B, K) with K >= 2, got shape {tuple(logits.shape)}")
    if y.shape != (logits.shape[0],):
        raise ValueError(f"y must be ({logits.shape[0]},), got shape {tuple(y.shape)}")
    return _logit_margin(logits.detach(), y)


def margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample logit margin of ``model`` at ``x``.

    Args:
        model: classifier returning (B, K) logits, K >= 2; evaluated in eval mode (its mode is restored).
        x: (B, ...) inputs in [0, 1].
        y: (B,) integer labels.

    Returns:
        (B,) tensor ``f_y(x) − max_{k≠y} f_k(x)``; > 0 exactly where the prediction is ``y``.

    Example:
        >>> model = create_model("mlp", hidden=(16,))
        >>> margin(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
        torch.Size([2])
    """
    x, y = prepare(model, x, y)
    with eval_mode(model), frozen_params(model), torch.no_grad():
        return logit_margin(model(x), y)


# ------------------------------------------------------------------------------- registry entry

def _margin_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    return {"margin_clean": logit_margin(ctx.logits, ctx.y), "margin_adv": logit_margin(ctx.logits_adv, ctx.y)}


MARGIN = MeasureSpec(
    "logit_margin", COLUMNS, _margin_measure,
    label=("logit margin at x", "logit margin at x_adv"), unit="logits",
    paper="")
"""``logit_margin``: logit of the label minus the largest other logit, at x and at x_adv (no extra pass)."""
