"""Autograd plumbing shared by every measure family and the measure table (private; imports no family).

* input checks: :func:`check_model`, :func:`prepare` (model and batch), :func:`check_like` (a tensor shaped
  like x: a direction, a perturbation, ``x_adv``);
* :func:`loss_logits_grad`: per-sample loss, logits and input gradient of a batch in one backward pass;
* Hessian-vector products: :data:`HVP_METHODS`, :class:`HessianOperator` (the batch's per-sample input
  Hessians as one linear map, its first backward kept) and :func:`shared_operator` (one operator per batch
  and point, shared by every measure that declares ``hessian=True`` and by the table, which takes the clean
  loss, logits and gradient from its kept first backward).

Why one backward pass serves every sample, and how the two Hessian-vector-product methods compare, is in
:mod:`landscape.measures.curvature`, the public face of the operator.
"""
from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import torch
import torch.nn as nn

from .._base import check_batch, check_labels_fit, model_dtype, per_sample_loss

__all__ = ["check_model", "prepare", "check_like", "loss_logits_grad", "HVP_METHODS", "check_method",
           "HessianOperator", "shared_operator"]


# --------------------------------------------------------------------------- checks


def check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
            *, need_labels: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the model and batch; return x (contiguous, detached, in the model's dtype) and y on x's device."""
    check_model(model)
    x, y = check_batch(x, y, dtype=model_dtype(model))
    if y is None:
        if need_labels:
            raise TypeError("labels y are required")
        return x.detach().contiguous(), None
    return x.detach().contiguous(), y.to(x.device)


def check_like(t: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` as a contiguous detached tensor of x's shape, dtype and device (NaN/Inf refused)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if t.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN/Inf values")
    return t.detach().to(device=x.device, dtype=x.dtype).contiguous()


# --------------------------------------------------------------------------- first order


def loss_logits_grad(model: nn.Module, x: torch.Tensor,
                     y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unchecked core: ``(loss (B,), logits (B, K), grad (B, ...))`` at ``x``, all detached.

    The model must already be in eval mode with frozen parameters.
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logits = model(xr)
        check_labels_fit(logits, y)
        loss = per_sample_loss(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), xr)
    return loss.detach(), logits.detach(), grad.detach()


# --------------------------------------------------------------------------- Hessian-vector products

HVP_METHODS = ("auto", "double_backprop", "func")
"""Allowed values of ``method=`` (see :mod:`landscape.measures.curvature`)."""


def check_method(method: str) -> str:
    if method not in HVP_METHODS:
        raise ValueError(f"unknown method {method!r} (allowed: {', '.join(map(repr, HVP_METHODS))})")
    return method


def summed_loss(model: nn.Module, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def loss(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        check_labels_fit(logits, y)
        return per_sample_loss(logits, y).sum()

    return loss


def hvp_func(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Forward-over-reverse: d/dt ∇L(x + t v) at t=0, via ``torch.func.jvp(torch.func.grad(L))``."""
    _, hv = torch.func.jvp(torch.func.grad(summed_loss(model, y)), (x,), (v,))
    return hv


class Graph(NamedTuple):
    """The first backward pass kept differentiable: input leaf, per-sample losses, logits, gradient."""

    x: torch.Tensor
    loss: torch.Tensor
    logits: torch.Tensor
    grad: torch.Tensor


def gradient_graph(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Graph:
    """∇ₓ of the summed loss with ``create_graph=True``: every later ``∇ₓ(gradᵀv)`` is one more backward."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logits = model(xr)
        check_labels_fit(logits, y)
        loss = per_sample_loss(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), xr, create_graph=True)
    if not grad.requires_grad:  # the cross-entropy gradient always depends on x: a detached backward
        raise RuntimeError("the model's input gradient is not differentiable (its backward is detached)")
    return Graph(xr, loss, logits, grad)


def product(graph: Graph, v: torch.Tensor) -> torch.Tensor:
    """Reverse-over-reverse on a kept graph: ∇ₓ (gradᵀv), the graph retained for the next product."""
    with torch.enable_grad():
        (hv,) = torch.autograd.grad(graph.grad, graph.x, grad_outputs=v, retain_graph=True)
    return hv.detach()


def warn_fallback(model: nn.Module, exc: BaseException) -> None:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    warnings.warn(f"double backpropagation failed for {type(model).__name__} ({first}); "
                  "using torch.func forward-over-reverse for Hessian-vector products",
                  RuntimeWarning, stacklevel=5)


class HessianOperator:
    """The per-sample input Hessians of one batch as a batched linear map ``v ↦ (H_i v_i)_i``.

    With double backpropagation the first backward pass (which also yields the loss, logits and input
    gradient at ``x``, see :attr:`graph`) is built once and kept, so every further product costs one more
    backward through it: about 1.3–1.9 input gradients instead of 2.2–3.3 for a product built from scratch
    (``benchmarks/bench_measures.py``). With ``torch.func`` every product is computed afresh. ``"auto"``
    tries double backpropagation on the first product and falls back to ``torch.func`` with a warning.

    Unchecked: the model must be in eval mode with frozen parameters, ``x``/``y`` validated. Holding the
    operator holds the graph (activation memory of one double-backward batch); drop it to free it.

    Attributes:
        derived: results a family derives from this batch's Hessians and shares between its measures
            (e.g. curvature's Gauss–Newton reduction), keyed by the family; dropped with the operator.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str = "auto"):
        self.model, self.x, self.y, self.method = model, x, y, method
        self._graph: Graph | None = None
        self.derived: dict = {}

    @property
    def graph(self) -> Graph | None:
        """The kept first backward pass (double backpropagation only; built by the first product)."""
        return self._graph

    def build(self) -> "HessianOperator":
        """Build the kept graph now (double backpropagation); a no-op for ``torch.func``."""
        if self.method != "func" and self._graph is None:
            try:
                self._graph = gradient_graph(self.model, self.x, self.y)
            except torch.OutOfMemoryError:
                raise
            except (RuntimeError, NotImplementedError) as exc:
                self._fall_back(exc)
        return self

    def _fall_back(self, exc: BaseException) -> None:
        """After double backprop failed with ``exc``: re-raise unless ``auto``, else warn once and switch to
        ``torch.func`` for this operator."""
        if self.method != "auto":
            raise exc
        warn_fallback(self.model, exc)
        self.method, self._graph = "func", None

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, ...): row i = ``H_i v_i``, detached."""
        self.build()
        if self.method == "func":
            return hvp_func(self.model, self.x, self.y, v).detach()
        try:
            hv = product(self._graph, v)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, NotImplementedError) as exc:
            self._fall_back(exc)
            return hvp_func(self.model, self.x, self.y, v).detach()
        self.method = "double_backprop"
        return hv

    @property
    def classes(self) -> int:
        """K, the number of logits (from the kept graph, else one forward pass of one sample)."""
        if self._graph is not None:
            return int(self._graph.logits.shape[1])
        with torch.no_grad():
            return int(self.model(self.x[:1]).shape[1])

    def subset(self, index: torch.Tensor) -> "HessianOperator":
        """The operator of the samples ``index`` (a new graph on those samples only, built lazily)."""
        return HessianOperator(self.model, self.x[index], self.y[index], self.method)


def shared_operator(model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: dict, point: str) -> HessianOperator:
    """The batch's Hessian operator at ``point`` (``"clean"`` or ``"adv"``), built once and kept in
    ``state["cache"]`` (the measure table's per-batch cache), so every measure of the batch that uses Hessian
    products shares it (its kept first backward makes each further product one more backward); its method
    starts as ``state["hvp_method"]``."""
    cache = state.setdefault("cache", {})
    key = f"hessian_operator_{point}"
    if key not in cache:
        cache[key] = HessianOperator(model, x, y, state["hvp_method"])
    return cache[key]
