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
from typing import Callable, NamedTuple

import torch
import torch.nn as nn

from .._base import check_labels_fit, eval_mode, frozen_params, per_sample_loss
from .gauss_newton import GaussNewton, factor as _gn_factor, ritz as _gn_ritz, rules_out as _gn_rules_out
from .gradients import _check_like, _prepare
from .lanczos import (Ritz, _krylov, _lanczos, _merge, _ritz_pairs, _spectrum_from_ritz, _start,  # noqa: F401
                      _top_from_ritz)
from .spec import STREAM_EIG, STREAM_RAND, BatchContext, MeasureSpec

__all__ = ["HVP_METHODS", "HessianOperator", "hvp", "directional_curvature", "top_eigenvalue", "hessian_spectrum"]

HVP_METHODS = ("auto", "double_backprop", "func")
"""Allowed values of ``method=``."""
EIG_SOLVERS = ("auto", "lanczos")
"""Allowed values of ``solver=``: ``"auto"`` uses the exact Gauss–Newton spectrum for samples whose logits
pass the piecewise-linearity test (:mod:`landscape.measures.gauss_newton`) and Lanczos for the others."""
GN_MAX_CLASSES = 256
"""Above this many logits the (B, K, D) Jacobian of the Gauss–Newton solver is not formed (Lanczos only)."""

EIG_ITERS = 30
"""Default most Lanczos steps for :func:`top_eigenvalue` (a ReLU net's Hessian needs at most K + 1)."""
EIG_TOL = 1e-3
"""Default relative error goal of the Lanczos eigenvalues."""
HS_K = 20
"""Eigenvalues in the paper's ``hs`` (the official evaluation's ``top_n=20``)."""
HS_ITERS = 60
"""Default most Lanczos steps per sample for :func:`hessian_spectrum`."""


# --------------------------------------------------------------------------- validation


def _check_method(method: str) -> str:
    if method not in HVP_METHODS:
        raise ValueError(f"unknown method {method!r} (allowed: {', '.join(map(repr, HVP_METHODS))})")
    return method


def _check_solver(solver: str) -> str:
    if solver not in EIG_SOLVERS:
        raise ValueError(f"unknown solver {solver!r} (allowed: {', '.join(map(repr, EIG_SOLVERS))})")
    return solver


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


class _Graph(NamedTuple):
    """The first backward pass kept differentiable: input leaf, per-sample losses, logits, gradient."""

    x: torch.Tensor
    loss: torch.Tensor
    logits: torch.Tensor
    grad: torch.Tensor


def _gradient_graph(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> _Graph:
    """∇ₓ of the summed loss with ``create_graph=True``: every later ``∇ₓ(gradᵀv)`` is one more backward."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logits = model(xr)
        check_labels_fit(logits, y)
        loss = per_sample_loss(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), xr, create_graph=True)
    if not grad.requires_grad:  # the cross-entropy gradient always depends on x: a detached backward
        raise RuntimeError("the model's input gradient is not differentiable (its backward is detached)")
    return _Graph(xr, loss, logits, grad)


def _product(graph: _Graph, v: torch.Tensor) -> torch.Tensor:
    """Reverse-over-reverse on a kept graph: ∇ₓ (gradᵀv), the graph retained for the next product."""
    with torch.enable_grad():
        (hv,) = torch.autograd.grad(graph.grad, graph.x, grad_outputs=v, retain_graph=True)
    return hv.detach()


def _hvp_double_backprop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reverse-over-reverse: ∇ₓ (∇ₓL · v) with ``create_graph=True``."""
    return _product(_gradient_graph(model, x, y), v)


def _warn_fallback(model: nn.Module, exc: BaseException) -> None:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    warnings.warn(f"double backpropagation failed for {type(model).__name__} ({first}); "
                  "using torch.func forward-over-reverse for Hessian-vector products",
                  RuntimeWarning, stacklevel=5)


def _hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
         method: str) -> tuple[torch.Tensor, str]:
    """Unchecked core (model already in eval mode with frozen parameters): returns ``(Hv, method used)``."""
    op = HessianOperator(model, x, y, method)
    return op(v), op.method


class HessianOperator:
    """The per-sample input Hessians of one batch as a batched linear map ``v ↦ (H_i v_i)_i``.

    With double backpropagation the first backward pass (which also yields the loss, logits and input
    gradient at ``x``, see :attr:`graph`) is built once and kept, so every further product costs one more
    backward through it: about 1.3–1.9 input gradients instead of 2.2–3.3 for a product built from scratch
    (``benchmarks/bench_measures.py``). With ``torch.func`` every product is computed afresh. ``"auto"``
    tries double backpropagation on the first product and falls back to ``torch.func`` with a warning.

    Unchecked: the model must be in eval mode with frozen parameters, ``x``/``y`` validated. Holding the
    operator holds the graph (activation memory of one double-backward batch); drop it to free it.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str = "auto"):
        self.model, self.x, self.y, self.method = model, x, y, method
        self._graph: _Graph | None = None
        self._gauss_newton: dict[tuple[float, int], GaussNewton | None] = {}

    @property
    def graph(self) -> _Graph | None:
        """The kept first backward pass (double backpropagation only; built by the first product)."""
        return self._graph

    def build(self) -> "HessianOperator":
        """Build the kept graph now (double backpropagation); a no-op for ``torch.func``."""
        if self.method != "func" and self._graph is None:
            try:
                self._graph = _gradient_graph(self.model, self.x, self.y)
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
        _warn_fallback(self.model, exc)
        self.method, self._graph = "func", None

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, ...): row i = ``H_i v_i``, detached."""
        self.build()
        if self.method == "func":
            return _hvp_func(self.model, self.x, self.y, v).detach()
        try:
            hv = _product(self._graph, v)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, NotImplementedError) as exc:
            self._fall_back(exc)
            return _hvp_func(self.model, self.x, self.y, v).detach()
        self.method = "double_backprop"
        return hv

    @property
    def classes(self) -> int:
        """K, the number of logits (from the kept graph, else one forward pass of one sample)."""
        if self._graph is not None:
            return int(self._graph.logits.shape[1])
        with torch.no_grad():
            return int(self.model(self.x[:1]).shape[1])

    def gauss_newton(self, *, tol: float, seed: int) -> GaussNewton | None:
        """The batch's Gauss–Newton reduction and its per-sample exactness test (computed once per
        ``(tol, seed)``, so ``eig_top`` and ``hs`` of one batch share it); the Jacobian comes from the kept
        graph's forward pass when there is one, else from a forward pass of its own (none is built for
        this: Lanczos builds it only if some sample fails the test). None when the model's backward cannot
        be differentiated again (the test needs a double backward) or the Jacobian does not fit in memory:
        then Lanczos serves every sample."""
        key = (float(tol), int(seed))
        if key not in self._gauss_newton:
            xr = logits = None
            try:
                if self._graph is not None:
                    xr, logits = self._graph.x, self._graph.logits
                else:
                    with torch.enable_grad():
                        xr = self.x.detach().requires_grad_(True)
                        logits = self.model(xr)
                self._gauss_newton[key] = _gn_factor(xr, logits, self.y, tol=tol, seed=seed)
            except torch.OutOfMemoryError:  # the (B, K, D) Jacobian did not fit: Lanczos needs less for large K
                xr = logits = None  # free the forward graph before Lanczos builds its own
                if self.x.is_cuda:
                    torch.cuda.empty_cache()
                self._gauss_newton[key] = None
            except (RuntimeError, NotImplementedError):
                self._gauss_newton[key] = None
        return self._gauss_newton[key]

    def subset(self, index: torch.Tensor) -> "HessianOperator":
        """The operator of the samples ``index`` (a new graph on those samples only, built lazily)."""
        return HessianOperator(self.model, self.x[index], self.y[index], self.method)


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


def _curvature_along(op: "HessianOperator", d: torch.Tensor) -> torch.Tensor:
    """dᵢᵀH_i dᵢ / ‖dᵢ‖² with the Hessians of ``op`` (B,); 0 for an exactly zero direction."""
    sq = _dot(d, d)
    hd = op(d)
    zero = sq == 0  # an exactly zero direction has curvature 0; a NaN direction stays NaN (never masked)
    curv = _dot(d, hd) / torch.where(zero, torch.ones_like(sq), sq)
    return torch.where(zero, torch.zeros_like(curv), curv)


def _directional_curvature(model: nn.Module, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor,
                           method: str) -> tuple[torch.Tensor, str]:
    """Unchecked core of :func:`directional_curvature`: ((B,), method used)."""
    op = HessianOperator(model, x, y, method)
    return _curvature_along(op, d), op.method


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




def _check_solver_args(iters, tol) -> None:
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")


def _top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int, tol: float, seed: int,
                    method: str, solver: str = "auto") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Unchecked core of :func:`top_eigenvalue`; also returns ``info`` (iterations, converged, method, ...)."""
    ritz = _eigen(HessianOperator(model, x, y, method), x, iters=iters, tol=tol, seed=seed, solver=solver)
    values, vectors = _top_from_ritz(ritz, x)
    return values, vectors, _info(ritz)


def _info(ritz: Ritz) -> dict:
    return {"iterations": int(ritz.steps.max()), "converged": int(ritz.converged.sum()), "method": ritz.method,
            "products": ritz.products, "sample_products": ritz.sample_products, "solver": ritz.solver}


def _eigen(op: HessianOperator, x: torch.Tensor, *, iters: int, tol: float, seed: int, top: bool = True,
           k: int | None = None, solver: str = "auto") -> Ritz:
    """The eigen-solve behind ``eig_top``, ``hs`` and the eigen direction (what ``top``/``k`` ask, as in
    :func:`~landscape.measures.lanczos._krylov`): with ``solver="auto"`` the samples that pass the
    Gauss–Newton test get their exact spectrum from the logit Jacobian and only the others run Lanczos."""
    if solver == "lanczos" or op.classes > GN_MAX_CLASSES:
        return _krylov(op, x, iters=iters, tol=tol, seed=seed, top=top, k=k)
    gn = op.gauss_newton(tol=tol, seed=seed)
    if gn is None or not bool(gn.exact.any()):
        return _krylov(op, x, iters=iters, tol=tol, seed=seed, top=top, k=k)
    if bool(gn.exact.all()):
        return _gn_ritz(gn, torch.arange(x.shape[0]), op.method)
    done, rest = gn.exact.nonzero().squeeze(1), (~gn.exact).nonzero().squeeze(1)
    lanczos = _krylov(op.subset(rest.to(x.device)), x[rest.to(x.device)], iters=iters, tol=tol, seed=seed, top=top,
                      k=k)
    return _merge(x.shape[0], [(done, _gn_ritz(gn, done, op.method)), (rest, lanczos)])


def top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int = EIG_ITERS,
                   tol: float = EIG_TOL, seed: int = 0, method: str = "auto",
                   solver: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Largest-magnitude eigenvalue of each sample's input Hessian: exact from the logit Jacobian where the
    logits are piecewise linear (ReLU nets), else by batched Lanczos.

    With ``solver="auto"`` (default) the batch's logit Jacobian (K backward passes) gives every sample's
    Gauss–Newton spectrum, and the logit-curvature term the form leaves out is measured per sample on two
    seeded probes and the top eigenvector (exactly 0 for piecewise-linear logits, see
    :mod:`landscape.measures.gauss_newton`); samples where it is within ``tol`` get the exact eigenpair
    (``iters`` unused), the others, and all samples with ``solver="lanczos"``, run Lanczos: each sample
    with full re-orthogonalisation from a seeded Gaussian start, one batched Hessian-vector product per
    step serving all samples. A sample stops once the estimated error of its
    largest-magnitude Ritz value is at most ``tol`` relative (and the other end of its spectrum cannot
    overtake it); the run ends when every sample has stopped or after ``iters`` steps. The Krylov space
    captures both ends of the spectrum, so negative eigenvalues of smooth nets are found as well. ReLU nets
    have Hessians of rank <= K - 1, where Lanczos is exact after at most K steps. Cost: one first backward
    pass plus one extra backward per step (about 1.3–1.9 input gradients; ``benchmarks/bench_measures.py``).

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) inputs.
        y: (B,) integer labels.
        iters: most Lanczos steps (Hessian-vector products) per sample, >= 1. Default 30.
        tol: relative error goal for the eigenvalue estimate, >= 0 (0 runs all ``iters`` steps). Default 1e-3.
        seed: seeds the start vectors (a ``torch.Generator`` on x's device). Default 0.
        method: Hessian-vector product method, see :func:`hvp`.
        solver: ``"auto"`` (default) or ``"lanczos"`` (see above).

    Returns:
        ``(values, vectors)``: (B,) eigenvalue estimates and (B, ...) unit-norm Ritz vectors with
        ``values[i] ≈ vectors[i]ᵀ H_i vectors[i]`` (equal up to rounding for Lanczos and ReLU nets; within
        ``tol·|λ|`` for a smooth sample accepted by the Gauss–Newton test).
    """
    method, solver = _check_method(method), _check_solver(solver)
    _check_solver_args(iters, tol)
    x, y = _prepare(model, x, y)
    with eval_mode(model), frozen_params(model):
        values, vectors, _ = _top_eigenvalue(model, x, y, iters=iters, tol=float(tol), seed=seed, method=method,
                                             solver=solver)
    return values, vectors


def hessian_spectrum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int = HS_K, *,
                     iters: int = HS_ITERS, tol: float = EIG_TOL, seed: int = 0,
                     method: str = "auto", solver: str = "auto") -> torch.Tensor:
    """Top-``k`` eigenvalues (by magnitude) of the input Hessian of the **batch-mean** cross-entropy.

    This is the paper's curvature metric ("HS"; Li & Spratling 2023, official evaluation code): the Hessian
    of ``mean_i CE(f(x_i), y_i)`` with respect to the whole batch ``x`` (a (B·D, B·D) matrix). In eval mode
    samples do not interact, so it is block-diagonal with blocks ``H_i / B``, and its spectrum is the union
    of the per-sample spectra divided by B. Each sample's spectrum is exact from its logit Jacobian where the
    logits are piecewise linear, else the top of it is found by batched Lanczos (see :func:`top_eigenvalue`),
    and the k largest magnitudes of the union are kept; a Lanczos sample stops as soon as none of its
    remaining eigenvalues can enter that top-k (so most samples stop after a few steps).
    ``hs = hessian_spectrum(...).abs().mean()``.

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) inputs (the batch; the result depends on B through the 1/B and the union).
        y: (B,) integer labels.
        k: number of eigenvalues, 1 <= k <= B·D. Default 20 (the official evaluation's).
        iters: most Lanczos steps per sample. Default 60.
        tol: relative error goal of each kept eigenvalue (for samples taken by the Gauss–Newton solver:
            every eigenvalue of the sample within ``tol`` times its largest). Default 1e-3.
        seed: seeds the start vectors. Default 0.
        method: Hessian-vector product method, see :func:`hvp`.
        solver: ``"auto"`` (default) or ``"lanczos"``, see :func:`top_eigenvalue`.

    Returns:
        (k,) float64 tensor of eigenvalues (signed) sorted by decreasing magnitude, on the CPU.

    Example:
        >>> model = create_model("mlp", hidden=(16,), activation="softplus")
        >>> hessian_spectrum(model, torch.rand(4, 1, 8, 8), torch.arange(4), k=5).shape
        torch.Size([5])
    """
    method, solver = _check_method(method), _check_solver(solver)
    _check_solver_args(iters, tol)
    x, y = _prepare(model, x, y)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= x.numel():
        raise ValueError(f"k must be an integer in [1, B·D = {x.numel()}], got {k!r}")
    with eval_mode(model), frozen_params(model):
        ritz = _eigen(HessianOperator(model, x, y, method), x, iters=iters, tol=float(tol), seed=seed,
                      top=False, k=k, solver=solver)
    return _spectrum_from_ritz(ritz, k, x.shape[0])


# ------------------------------------------------------------------------------- registry entries
# (adapters from a measured batch to the functions above; see landscape/measures/registry.py)

def _rademacher(shape: torch.Size, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 2, shape, generator=g, device=device).to(dtype) * 2 - 1


CLEAN_POINT_MEASURES = ("curv_adv", "curv_rand", "eig_top", "hs")
"""The measures that build the Hessian operator at the clean point (the table then takes the clean loss,
logits and gradient from its kept first backward instead of a separate gradient)."""


def _shared_operator(model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: dict, point: str) -> HessianOperator:
    """The batch's Hessian operator at ``point``, built once and kept in ``state["cache"]``, so every curvature
    measure of the batch shares it (its kept first backward makes each further product one more backward)."""
    cache = state.setdefault("cache", {})
    key = f"hessian_operator_{point}"
    if key not in cache:
        cache[key] = HessianOperator(model, x, y, state["hvp_method"])
    return cache[key]


def _operator(ctx: BatchContext) -> HessianOperator:
    return _shared_operator(ctx.model, ctx.x, ctx.y, ctx.state, ctx.point)


def _curv_adv_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    op = _operator(ctx)
    value = _curvature_along(op, ctx.delta)
    ctx.state["hvp_method"] = op.method
    return {"curv_adv": value}


def _curv_rand_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    d = _rademacher(ctx.x.shape, ctx.seed_for(STREAM_RAND), ctx.x.device, ctx.x.dtype)
    op = _operator(ctx)
    value = _curvature_along(op, d)
    ctx.state["hvp_method"] = op.method
    return {"curv_rand": value}


def _solve(ctx: BatchContext, **kw) -> Ritz:
    """The eigen-solve of a measure on the batch's shared operator; records the methods used in ``ctx.state``.
    Once every sample of a batch failed the Gauss–Newton test on measured logit curvature (a smooth net;
    NaN samples do not count), later batches go straight to Lanczos."""
    op, seed = _operator(ctx), ctx.seed_for(STREAM_EIG)
    ritz = _eigen(op, ctx.x, tol=EIG_TOL, seed=seed, solver=ctx.state.get("eig_solver_hint", "auto"), **kw)
    key = (EIG_TOL, seed)
    if key in op._gauss_newton and _gn_rules_out(op._gauss_newton[key]):  # the test ran and ruled it out
        ctx.state["eig_solver_hint"] = "lanczos"
    if "lanczos" in ritz.solver:  # Lanczos's products may have switched method; the test's never do
        ctx.state["hvp_method"] = ritz.method
    ctx.state.setdefault("eig_solvers", set()).update(ritz.solver.split("+"))
    return ritz


def _eig_top_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    ritz = _solve(ctx, iters=ctx.eig_iters)
    ctx.state["eig_unconverged"] = ctx.state.get("eig_unconverged", 0) + ctx.x.shape[0] - int(ritz.converged.sum())
    return {"eig_top": _top_from_ritz(ritz, ctx.x)[0]}


def _hs_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    """The paper's HS of the batch: mean |top-20 eigenvalue| of the batch-mean loss's input Hessian (0-d)."""
    ritz = _solve(ctx, iters=max(ctx.eig_iters, HS_ITERS), top=False, k=HS_K)
    return {"hs": _spectrum_from_ritz(ritz, HS_K, ctx.x.shape[0]).abs().mean()}


_CURV_UNIT = "dᵀHd/‖d‖², nats / unit²"
CURV_ADV = MeasureSpec("curv_adv", ("curv_adv",), _curv_adv_measure, "curvature along adv. direction", _CURV_UNIT,
                       default=True, paper="")
CURV_RAND = MeasureSpec("curv_rand", ("curv_rand",), _curv_rand_measure, "curvature along random direction",
                        _CURV_UNIT, default=True, paper="")
# eig_top and hs share one eigen-solve per batch (the logit Jacobian of a ReLU net: about K backward passes;
# Lanczos otherwise): opt-in, see benchmarks/bench_units.py
EIG_TOP = MeasureSpec("eig_top", ("eig_top",), _eig_top_measure, "top Hessian eigenvalue", "nats / unit²",
                      default=False, paper="")
HS = MeasureSpec("hs", ("hs",), _hs_measure, "mean |top-20 eigenvalue| (HS)", "nats / unit²", per_batch=True,
                 paper="HS: mean |top-20 eigenvalue| of the batch-mean loss's input Hessian (official evaluation)")
