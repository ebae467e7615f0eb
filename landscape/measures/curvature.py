"""Second-order input-space measures: Hessian-vector products, directional curvature, top eigenvalue.

All quantities are per sample: ``H_i = ∇²ₓ CE(f(x_i), y_i)`` is the Hessian of sample i's cross-entropy
with respect to its own input (a (D, D) matrix, D = numel of one input). The summed loss
``Σ_i CE(f(x_i), y_i)`` has a block-diagonal input Hessian when samples do not interact, which holds in
eval mode (batch-norm uses running statistics), so one Hessian-vector product of the summed loss gives
every sample's ``H_i v_i`` at once.

Two exact ways to compute ``Hv`` are available (``method=``):

* ``"double_backprop"`` — reverse-over-reverse with ``torch.autograd``: differentiate ``gᵀv`` with
  ``create_graph=True``; works with any model whose backward is itself differentiable (hooks and in-place
  ops included);
* ``"func"`` — forward-over-reverse with ``torch.func``: the JVP of ``torch.func.grad`` of the summed loss;
* ``"auto"`` (default) — ``"double_backprop"``, falling back to ``"func"`` with a warning when the model's
  backward cannot be differentiated again (a ``RuntimeError``/``NotImplementedError``).

Double backpropagation is the default because it measured faster: one directional curvature cost
2.5–3.3 input gradients with it and 4.1–11 with ``torch.func`` (preact_resnet18 at 32×32 and small_cnn at
8×8, batch 32, on an H100 and on 8 CPU threads; ``benchmarks/bench_measures.py``, numbers in
``docs/measures.md``). Both are exact and agree to rounding (tested).

ReLU networks are piecewise linear, so their logits have zero second derivative almost everywhere and the
whole input curvature comes from the softmax/cross-entropy: ``H = Jᵀ (diag(p) − ppᵀ) J`` with J the
logit Jacobian, a positive semi-definite matrix of rank ≤ K − 1. Smooth nets (softplus, tanh, GELU) add
the logit curvature terms and can have negative eigenvalues.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn as nn

from .._base import check_labels_fit, eval_mode, frozen_params, per_sample_loss
from .gradients import _check_like, _prepare
from .spec import STREAM_EIG, STREAM_RAND, BatchContext, MeasureSpec

__all__ = ["HVP_METHODS", "hvp", "directional_curvature", "top_eigenvalue"]

HVP_METHODS = ("auto", "double_backprop", "func")
"""Allowed values of ``method=``."""


# --------------------------------------------------------------------------- validation


def _check_method(method: str) -> str:
    if method not in HVP_METHODS:
        raise ValueError(f"unknown method {method!r} (allowed: {', '.join(map(repr, HVP_METHODS))})")
    return method


# --------------------------------------------------------------------------- Hessian-vector products


def _summed_loss(model: nn.Module, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def loss(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        check_labels_fit(logits, y)
        return per_sample_loss(logits, y).sum()

    return loss


def _hvp_func(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Forward-over-reverse: d/dt ∇L(x + t v) at t=0, via ``torch.func.jvp(torch.func.grad(L))``."""
    _, hv = torch.func.jvp(torch.func.grad(_summed_loss(model, y)), (x,), (v,))
    return hv


def _hvp_double_backprop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reverse-over-reverse: ∇ₓ (∇ₓL · v) with ``create_graph=True``."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(_summed_loss(model, y)(xr), xr, create_graph=True)
        if not grad.requires_grad:  # the cross-entropy gradient always depends on x: a detached backward
            raise RuntimeError("the model's input gradient is not differentiable (its backward is detached)")
        (hv,) = torch.autograd.grad(grad, xr, grad_outputs=v)
    return hv


_IMPLEMENTATIONS = {"func": _hvp_func, "double_backprop": _hvp_double_backprop}


def _hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
         method: str) -> tuple[torch.Tensor, str]:
    """Unchecked core (model already in eval mode with frozen parameters): returns ``(Hv, method used)``."""
    if method != "auto":
        return _IMPLEMENTATIONS[method](model, x, y, v).detach(), method
    try:
        return _hvp_double_backprop(model, x, y, v).detach(), "double_backprop"
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, NotImplementedError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warnings.warn(f"double backpropagation failed for {type(model).__name__} ({first}); "
                      "using torch.func forward-over-reverse for Hessian-vector products",
                      RuntimeWarning, stacklevel=3)
        return _hvp_func(model, x, y, v).detach(), "func"


def hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *,
        method: str = "auto") -> torch.Tensor:
    """Exact per-sample input-space Hessian-vector product ``H_i v_i`` of the cross-entropy.

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) inputs.
        y: (B,) integer labels.
        v: (B, ...) vectors, one per sample, same shape as ``x``.
        method: ``"auto"`` (default: double backpropagation, else torch.func), ``"func"`` or
            ``"double_backprop"`` (see the module docstring).

    Returns:
        (B, ...) tensor, row i = ``∇²ₓ CE(f(x_i), y_i) · v_i``, detached.

    Raises:
        ValueError: unknown method, shape mismatch, NaN/Inf values, bad labels.
        TypeError: wrong argument types.

    Example:
        >>> model = create_model("mlp", hidden=(16,), activation="softplus")
        >>> x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
        >>> hvp(model, x, y, torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """
    method = _check_method(method)
    x, y = _prepare(model, x, y)
    v = _check_like(v, x, "v")
    with eval_mode(model), frozen_params(model):
        return _hvp(model, x, y, v, method)[0]


# --------------------------------------------------------------------------- derived measures


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product: (B, ...), (B, ...) -> (B,)."""
    return (a * b).flatten(1).sum(1)


def _directional_curvature(model: nn.Module, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor,
                           method: str) -> tuple[torch.Tensor, str]:
    """Unchecked core of :func:`directional_curvature`: ((B,), method used)."""
    sq = _dot(d, d)
    hd, used = _hvp(model, x, y, d, method)
    zero = sq == 0  # an exactly zero direction has curvature 0; a NaN direction stays NaN (never masked)
    curv = _dot(d, hd) / torch.where(zero, torch.ones_like(sq), sq)
    return torch.where(zero, torch.zeros_like(curv), curv), used


def directional_curvature(model: nn.Module, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor, *,
                          method: str = "auto") -> torch.Tensor:
    """Curvature of each sample's loss along its direction: ``d_iᵀ H_i d_i / ‖d_i‖²``.

    This is the second derivative of ``t ↦ CE(f(x_i + t·u_i), y_i)`` at t=0 for the unit direction
    ``u_i = d_i/‖d_i‖`` (scale-invariant in ``d_i``). A sample whose direction is exactly zero (e.g. an
    adversarial perturbation at ``eps=0``) gets curvature **0**: no direction, no bending.

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) inputs.
        y: (B,) integer labels.
        d: (B, ...) directions (e.g. ``x_adv - x`` or a random direction).
        method: Hessian-vector product method, see :func:`hvp`.

    Returns:
        (B,) tensor of curvatures (same dtype as the model), detached.
    """
    method = _check_method(method)
    x, y = _prepare(model, x, y)
    d = _check_like(d, x, "d")
    with eval_mode(model), frozen_params(model):
        return _directional_curvature(model, x, y, d, method)[0]


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Per-sample unit vectors (a zero row stays zero)."""
    n = v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
    return v / torch.where(n > 0, n, torch.ones_like(n))


def _top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int, tol: float, seed: int,
                    method: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Unchecked core of :func:`top_eigenvalue`; also returns ``info`` (iterations, converged, method)."""
    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    v = _unit(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
    values = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    used, done = method, 0
    for done in range(1, iters + 1):
        idx = active.nonzero().squeeze(1)
        hv, used = _hvp(model, x[idx], y[idx], v[idx], used)
        rayleigh = _dot(v[idx], hv)  # v is unit: vᵀHv
        converged = hv.flatten(1).norm(dim=1) == 0  # H v = 0: nothing left to iterate
        if done > 1:
            converged |= (rayleigh - values[idx]).abs() <= tol * rayleigh.abs()
        values[idx] = rayleigh
        active[idx[converged]] = False
        if done == iters or not active.any():
            break  # no step after the last product: (values, v) stay Rayleigh pairs
        # converged samples keep their v, so that (value, vector) stay a consistent Rayleigh pair
        keep = converged.reshape(-1, *([1] * (x.dim() - 1)))
        v[idx] = torch.where(keep, v[idx], _unit(hv))
    info = {"iterations": done, "converged": int((~active).sum()), "method": used}
    return values, v, info


def top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int = 20, tol: float = 1e-4,
                   seed: int = 0, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Largest-magnitude eigenvalue of each sample's input Hessian, by batched power iteration.

    Starts from a seeded Gaussian unit vector per sample and iterates ``v ← H v / ‖H v‖``; the estimate is the
    Rayleigh quotient ``vᵀHv``, whose sign is that of the dominant eigenvalue. A sample stops once its
    estimate changes by at most ``tol`` relative to its magnitude; the loop ends when every sample has
    stopped or after ``iters`` Hessian-vector products. Convergence is geometric with ratio |λ₂/λ₁|, so
    samples with near-equal top eigenvalues need more iterations. Each iteration costs one HVP on the
    samples not yet converged.

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) inputs.
        y: (B,) integer labels.
        iters: maximum number of power iterations, >= 1. Default 20.
        tol: relative change of the eigenvalue estimate that counts as converged, >= 0. Default 1e-4.
        seed: seeds the start vectors (a ``torch.Generator`` on x's device). Default 0.
        method: Hessian-vector product method, see :func:`hvp`.

    Returns:
        ``(values, vectors)``: (B,) eigenvalue estimates and (B, ...) unit-norm eigenvector estimates with
        ``values[i] = vectors[i]ᵀ H_i vectors[i]``.
    """
    method = _check_method(method)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    x, y = _prepare(model, x, y)
    with eval_mode(model), frozen_params(model):
        values, vectors, _ = _top_eigenvalue(model, x, y, iters=iters, tol=float(tol), seed=seed, method=method)
    return values, vectors


# ------------------------------------------------------------------------------- registry entries
# (adapters from a measured batch to the functions above; see landscape/measures/registry.py)

def _rademacher(shape: torch.Size, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 2, shape, generator=g, device=device).to(dtype) * 2 - 1


def _curv_adv_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    value, ctx.state["hvp_method"] = _directional_curvature(ctx.model, ctx.x, ctx.y, ctx.delta,
                                                            ctx.state["hvp_method"])
    return {"curv_adv": value}


def _curv_rand_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    d = _rademacher(ctx.x.shape, ctx.seed_for(STREAM_RAND), ctx.x.device, ctx.x.dtype)
    value, ctx.state["hvp_method"] = _directional_curvature(ctx.model, ctx.x, ctx.y, d, ctx.state["hvp_method"])
    return {"curv_rand": value}


def _eig_top_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    values, _, info = _top_eigenvalue(ctx.model, ctx.x, ctx.y, iters=ctx.eig_iters, tol=1e-4,
                                      seed=ctx.seed_for(STREAM_EIG), method=ctx.state["hvp_method"])
    ctx.state["hvp_method"] = info["method"]
    ctx.state["eig_unconverged"] = ctx.state.get("eig_unconverged", 0) + ctx.x.shape[0] - info["converged"]
    return {"eig_top": values}


_CURV_UNIT = "dᵀHd/‖d‖², nats / unit²"
CURV_ADV = MeasureSpec("curv_adv", ("curv_adv",), _curv_adv_measure, "curvature along adv. direction", _CURV_UNIT,
                       default=True, paper="")
CURV_RAND = MeasureSpec("curv_rand", ("curv_rand",), _curv_rand_measure, "curvature along random direction",
                        _CURV_UNIT, default=True, paper="")
EIG_TOP = MeasureSpec("eig_top", ("eig_top",), _eig_top_measure, "top Hessian eigenvalue", "nats / unit²",
                      default=True, paper="")
