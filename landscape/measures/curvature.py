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
``docs/measures.md``). Both are exact and agree to rounding (tested). The operator behind them,
:class:`HessianOperator`, is shared plumbing defined in :mod:`landscape.measures._autograd` (the measure table
uses it too); this module is its public face and adds the eigen-solves on top of it.

ReLU networks are piecewise linear, so their logits have zero second derivative almost everywhere and the
whole input curvature comes from the softmax/cross-entropy: ``H = Jᵀ (diag(p) − ppᵀ) J`` with J the
logit Jacobian, a positive semi-definite matrix of rank ≤ K − 1. Smooth nets (softplus, tanh, GELU) add
the logit curvature terms and can have negative eigenvalues.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .._base import eval_mode, frozen_params
from ._autograd import HessianOperator, check_like, check_method, prepare, shared_operator
from .gauss_newton import GaussNewton, factor as _gn_factor, ritz as _gn_ritz, rules_out as _gn_rules_out
from .lanczos import Ritz, _krylov, _merge, _spectrum_from_ritz, _top_from_ritz
from .spec import STREAM_EIG, STREAM_RAND, BatchContext, MeasureSpec

__all__ = ["HessianOperator", "hvp", "directional_curvature", "top_eigenvalue", "hessian_spectrum"]

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


def _check_solver(solver: str) -> str:
    if solver not in EIG_SOLVERS:
        raise ValueError(f"unknown solver {solver!r} (allowed: {', '.join(map(repr, EIG_SOLVERS))})")
    return solver


# --------------------------------------------------------------------------- Hessian-vector products
# (the operator itself, HessianOperator, is the shared plumbing of landscape/measures/_autograd.py)


def _hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
         method: str) -> tuple[torch.Tensor, str]:
    """Unchecked core (model already in eval mode with frozen parameters): returns ``(Hv, method used)``."""
    op = HessianOperator(model, x, y, method)
    return op(v), op.method


def _gauss_newton(op: HessianOperator, *, tol: float, seed: int) -> GaussNewton | None:
    """The batch's Gauss–Newton reduction and its per-sample exactness test (computed once per operator and
    ``(tol, seed)``, so ``eig_top`` and ``hs`` of one batch share it); the Jacobian comes from the operator's
    kept graph's forward pass when there is one, else from a forward pass of its own (none is built for
    this: Lanczos builds it only if some sample fails the test). None when the model's backward cannot
    be differentiated again (the test needs a double backward) or the Jacobian does not fit in memory:
    then Lanczos serves every sample."""
    key = ("gauss_newton", float(tol), int(seed))
    if key not in op.derived:
        xr = logits = None
        try:
            if op.graph is not None:
                xr, logits = op.graph.x, op.graph.logits
            else:
                with torch.enable_grad():
                    xr = op.x.detach().requires_grad_(True)
                    logits = op.model(xr)
            op.derived[key] = _gn_factor(xr, logits, op.y, tol=tol, seed=seed)
        except torch.OutOfMemoryError:  # the (B, K, D) Jacobian did not fit: Lanczos needs less for large K
            xr = logits = None  # free the forward graph before Lanczos builds its own
            if op.x.is_cuda:
                torch.cuda.empty_cache()
            op.derived[key] = None
        except (RuntimeError, NotImplementedError):
            op.derived[key] = None
    return op.derived[key]


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
    method = check_method(method)
    x, y = prepare(model, x, y)
    v = check_like(v, x, "v")
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
    method = check_method(method)
    x, y = prepare(model, x, y)
    d = check_like(d, x, "d")
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
    gn = _gauss_newton(op, tol=tol, seed=seed)
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
    method, solver = check_method(method), _check_solver(solver)
    _check_solver_args(iters, tol)
    x, y = prepare(model, x, y)
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
    method, solver = check_method(method), _check_solver(solver)
    _check_solver_args(iters, tol)
    x, y = prepare(model, x, y)
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


def _operator(ctx: BatchContext) -> HessianOperator:
    return shared_operator(ctx.model, ctx.x, ctx.y, ctx.state, ctx.point)


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
    key = ("gauss_newton", EIG_TOL, seed)
    if key in op.derived and _gn_rules_out(op.derived[key]):  # the test ran and ruled it out
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
                       default=True, paper="", hessian=True)
CURV_RAND = MeasureSpec("curv_rand", ("curv_rand",), _curv_rand_measure, "curvature along random direction",
                        _CURV_UNIT, default=True, paper="", hessian=True)
# eig_top and hs share one eigen-solve per batch (the logit Jacobian of a ReLU net: about K backward passes;
# Lanczos otherwise): opt-in, see benchmarks/bench_units.py
EIG_TOP = MeasureSpec("eig_top", ("eig_top",), _eig_top_measure, "top Hessian eigenvalue", "nats / unit²",
                      default=False, paper="", hessian=True, counters=("eig_unconverged",))
HS = MeasureSpec("hs", ("hs",), _hs_measure, "mean |top-20 eigenvalue| (HS)", "nats / unit²", per_batch=True,
                 paper="HS: mean |top-20 eigenvalue| of the batch-mean loss's input Hessian (official evaluation)",
                 hessian=True)
