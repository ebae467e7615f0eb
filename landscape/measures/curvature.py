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
from .gradients import _check_like, _prepare
from .spec import STREAM_EIG, STREAM_RAND, BatchContext, MeasureSpec

__all__ = ["HVP_METHODS", "HessianOperator", "hvp", "directional_curvature", "top_eigenvalue", "hessian_spectrum"]

HVP_METHODS = ("auto", "double_backprop", "func")
"""Allowed values of ``method=``."""

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
                  RuntimeWarning, stacklevel=4)


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
                if self.method != "auto":
                    raise
                _warn_fallback(self.model, exc)
                self.method = "func"
        return self

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
            if self.method != "auto":
                raise
            _warn_fallback(self.model, exc)
            self.method, self._graph = "func", None
            return _hvp_func(self.model, self.x, self.y, v).detach()
        self.method = "double_backprop"
        return hv

    @property
    def classes(self) -> int:
        """K, the number of logits (from the kept graph, else one forward pass of one sample)."""
        self.build()
        if self._graph is not None:
            return int(self._graph.logits.shape[1])
        with torch.no_grad():
            return int(self.model(self.x[:1]).shape[1])

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




# --------------------------------------------------------------------------- Krylov eigen-solver
#
# Batched Lanczos: every sample i builds its own Krylov basis q_0, q_1, ... of H_i from a seeded Gaussian
# start, all samples sharing one batched Hessian-vector product per step. The basis is fully
# re-orthogonalised (classical Gram–Schmidt applied twice, "twice is enough"), so the Ritz values of the
# tridiagonal T_i are accurate without ghost copies. A Ritz value θ with Ritz vector s (of T_i) has residual
# r = β_m |s_m| (there is an eigenvalue of H_i within r of θ) and, for an isolated θ, error about r²/gap, the
# gap measured to the other Ritz values; the estimate used is min(r, r²/gap). Each sample stops as soon as
# the values it is asked for are converged; finished samples leave the product batch (with double
# backprop the kept graph is rebuilt on the remaining samples once they are at most half of it).


class Ritz(NamedTuple):
    """Batched Lanczos result for B samples (values/errors on the CPU in float64).

    values: (B, M) Ritz values, ascending, NaN past each sample's Krylov dimension.
    errors: (B, M) error estimates ``min(r, r²/gap)`` of those values.
    top: (B,) column of the largest-magnitude Ritz value in ``values``.
    vector: (B, D) unit Ritz vector of that value (x's dtype and device).
    steps: (B,) Krylov dimension reached = Hessian-vector products spent on the sample.
    converged: (B,) bool, the sample's stopping rule held (or its Krylov space became invariant).
    products: batched operator applications; ``sample_products``: their summed batch sizes.
    method: Hessian-vector product method used.
    """

    values: torch.Tensor
    errors: torch.Tensor
    top: torch.Tensor
    vector: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    products: int
    sample_products: int
    method: str


def _pick(values: torch.Tensor, mask: torch.Tensor, largest: bool) -> torch.Tensor:
    """Column of the largest (smallest) entry of ``values`` where ``mask`` holds, per row: (B, M) -> (B,)."""
    fill = float("-inf") if largest else float("inf")
    masked = torch.where(mask, values, torch.full_like(values, fill))
    return masked.argmax(1) if largest else masked.argmin(1)


def _top_done(values: torch.Tensor, errors: torch.Tensor, tol: float) -> torch.Tensor:
    """Stopping rule for the top eigenvalue (B,): the largest-magnitude Ritz value and the next one at the
    same end of the spectrum are converged (a second converged value makes a missed top eigenvalue, one
    whose start-vector component is tiny, less likely), and the Ritz value at the opposite end cannot
    overtake it."""
    known = ~torch.isnan(values)
    top = _pick(values.abs(), known, largest=True)
    theta, err = values.gather(1, top[:, None])[:, 0], errors.gather(1, top[:, None])[:, 0]
    positive = theta >= 0
    other = torch.where(positive, _pick(values, known, largest=False), _pick(values, known, largest=True))
    o_theta, o_err = values.gather(1, other[:, None])[:, 0], errors.gather(1, other[:, None])[:, 0]
    guard = (other == top) | (o_theta.abs() + o_err < theta.abs())
    same = known & ((values >= 0) == positive[:, None])
    same.scatter_(1, top[:, None], False)
    second = torch.where(positive, _pick(values, same, largest=True), _pick(values, same, largest=False))
    s_err = errors.gather(1, second[:, None])[:, 0]
    bound = tol * theta.abs()
    return (err <= bound) & guard & (~same.any(1) | (s_err <= bound))


def _threshold(values: torch.Tensor, k: int) -> float:
    """The k-th largest |Ritz value| over all samples (0 if fewer are known): a lower bound on the k-th
    largest |eigenvalue| of the union, because extreme Ritz values interlace inside the spectrum."""
    mags = values.abs()[~torch.isnan(values)]
    return float(mags.topk(k).values[-1]) if mags.numel() >= k else 0.0


def _spectrum_done(values: torch.Tensor, errors: torch.Tensor, k: int, tol: float) -> torch.Tensor:
    """Stopping rule for the top-k of the union of all samples' spectra (B,).

    With τ the current k-th largest magnitude (:func:`_threshold`), a sample is done when its Ritz values
    with |θ| >= τ are converged and either it already holds k of them or its outermost Ritz values below τ
    (one per end of the spectrum) are, within their error estimates, inside (-τ, τ).
    """
    tau = _threshold(values, k)
    known = ~torch.isnan(values)
    mags = values.abs()
    wanted = known & (mags >= tau) if tau > 0 else known
    accurate = ((errors <= tol * mags) | ~wanted).all(1)
    middle = known & ~wanted
    hi, lo = _pick(values, middle, largest=True), _pick(values, middle, largest=False)
    hi_v, hi_e = values.gather(1, hi[:, None])[:, 0], errors.gather(1, hi[:, None])[:, 0]
    lo_v, lo_e = values.gather(1, lo[:, None])[:, 0], errors.gather(1, lo[:, None])[:, 0]
    bounded = middle.any(1) & (hi_v + hi_e < tau) & (lo_v - lo_e > -tau)
    return accurate & (bounded | (wanted.sum(1) >= k))


def _ritz_pairs(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the tridiagonal T (n, m, m) from its diagonal ``alpha`` (n, m) and the
    couplings ``beta`` (n, m) (the last one is the residual norm): (θ ascending, S, error estimates)."""
    m = alpha.shape[1]
    t = torch.diag_embed(alpha)
    if m > 1:
        t = t + torch.diag_embed(beta[:, :-1], 1) + torch.diag_embed(beta[:, :-1], -1)
    theta, s = torch.linalg.eigh(t)
    r = beta[:, -1:].abs() * s[:, -1, :].abs()
    dist = (theta[:, :, None] - theta[:, None, :]).abs()
    dist = dist + torch.diag_embed(torch.full_like(theta, float("inf")))
    gap = dist.min(2).values
    quad = torch.where(torch.isinf(gap), r, r * r / gap)
    return theta, s, torch.minimum(r, quad)


def _lanczos(op: HessianOperator, v0: torch.Tensor, *, steps: int,
             done: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], min_steps: int = 1) -> Ritz:
    """Batched Lanczos with full re-orthogonalisation on the samples of ``op`` (see the section comment).

    Args:
        op: the batch's Hessian operator (B samples).
        v0: (B, ...) start vectors (need not be normalised).
        steps: most Hessian-vector products per sample (capped at D, where the Krylov space is all of R^D).
        done: stopping rule ``(values (B, M), errors (B, M)) -> (B,) bool`` over all samples (see
            :func:`_top_done`, :func:`_spectrum_done`); a finished sample stays finished.
        min_steps: no sample stops on ``done`` before this many steps (it may stop earlier when its Krylov
            space is invariant: then its Ritz values are eigenvalues).
    """
    b, shape = v0.shape[0], v0.shape[1:]
    dev, dt = v0.device, v0.dtype
    dim = v0[0].numel()
    m_max = min(int(steps), dim)
    basis = torch.zeros(b, m_max, dim, device=dev, dtype=dt)
    flat = v0.flatten(1)
    basis[:, 0] = flat / flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dt).tiny)
    alpha = torch.zeros(b, m_max, dtype=torch.float64)
    beta = torch.zeros(b, m_max, dtype=torch.float64)
    values = torch.full((b, m_max), float("nan"), dtype=torch.float64)
    errors = torch.full((b, m_max), float("inf"), dtype=torch.float64)
    coef = torch.zeros(b, m_max, dtype=torch.float64)
    n_steps = torch.zeros(b, dtype=torch.long)
    finished = torch.zeros(b, dtype=torch.bool)
    cover = torch.arange(b)  # the samples in op's batch
    products = sample_products = 0
    method = op.method
    noise = 10 * torch.finfo(dt).eps  # a residual at rounding level: the Krylov space is invariant
    for j in range(m_max):
        act = (~finished).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        if act.numel() < cover.numel() and (op.method == "func" or 2 * act.numel() <= cover.numel()):
            op, cover = op.subset(torch.searchsorted(cover, act).to(dev)), act
        live = (~finished[cover]).to(device=dev, dtype=dt)[:, None]
        hv = op((basis[cover.to(dev), j] * live).view(-1, *shape)).flatten(1)
        if products == 0:
            method = op.method
        products, sample_products = products + 1, sample_products + cover.numel()
        act_d = act.to(dev)
        w = hv[torch.searchsorted(cover, act).to(dev)]
        q = basis[act_d, :j + 1]
        a = (q[:, j] * w).sum(1)
        for _ in range(2):  # full re-orthogonalisation against every earlier basis vector
            w = w - torch.einsum("nm,nmd->nd", torch.einsum("nmd,nd->nm", q, w), q)
        nrm = w.norm(dim=1)
        alpha[act, j], beta[act, j] = a.double().cpu(), nrm.double().cpu()
        n_steps[act] = j + 1
        finite = torch.isfinite(alpha[act, :j + 1]).all(1) & torch.isfinite(beta[act, :j + 1]).all(1)
        al = torch.where(finite[:, None], alpha[act, :j + 1], torch.zeros(()))
        be = torch.where(finite[:, None], beta[act, :j + 1], torch.zeros(()))
        theta, s, err = _ritz_pairs(al, be)
        values[act, :j + 1] = torch.where(finite[:, None], theta, torch.full_like(theta, float("nan")))
        errors[act, :j + 1] = err
        top = theta.abs().argmax(1)
        coef[act, :j + 1] = s.gather(2, top[:, None, None].expand(-1, j + 1, 1))[:, :, 0]
        if j + 1 < m_max:
            basis[act_d, j + 1] = w / nrm.clamp_min(torch.finfo(dt).tiny)[:, None]
        scale = values[act, :j + 1].abs().nan_to_num(0.0).amax(1)
        invariant = ~finite | (beta[act, j] <= noise * scale) | (beta[act, j] == 0)
        now = done(values, errors)[act] & (j + 1 >= min_steps)
        finished[act] = now | invariant
    converged = finished.clone()
    top = _pick(values.abs(), ~torch.isnan(values), largest=True)
    vec = torch.einsum("bm,bmd->bd", coef.to(device=dev, dtype=dt), basis)
    vec = vec / vec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dt).tiny)
    return Ritz(values, errors, top, vec, n_steps, converged, products, sample_products, method)


def _start(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Seeded Gaussian start vectors (B, ...) on x's device."""
    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _krylov(op: HessianOperator, x: torch.Tensor, *, iters: int, tol: float, seed: int,
            top: bool = True, k: int | None = None) -> Ritz:
    """One Lanczos run on ``op`` that serves the top eigenvalue (``top``) and/or the top-``k`` of the union."""
    rules = []
    if top:
        rules.append(lambda v, e: _top_done(v, e, tol))
    if k is not None:
        rules.append(lambda v, e: _spectrum_done(v, e, k, tol))

    def done(v: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        out = torch.ones(v.shape[0], dtype=torch.bool)
        for rule in rules:
            out &= rule(v, e)
        return out

    # A piecewise-linear (ReLU) net's Hessian has rank <= K - 1, so its Krylov space is invariant after at
    # most K steps and then holds every non-zero eigenvalue; not stopping before K steps means an eigenvalue
    # whose start-vector component happens to be tiny is still found.
    return _lanczos(op, _start(x, seed), steps=iters, done=done, min_steps=op.classes)


def _top_from_ritz(ritz: Ritz, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) top eigenvalues in x's dtype/device and (B, ...) unit eigenvectors from a Lanczos result."""
    values = ritz.values.gather(1, ritz.top[:, None])[:, 0]
    return values.to(device=like.device, dtype=like.dtype), ritz.vector.view(like.shape)


def _spectrum_from_ritz(ritz: Ritz, k: int, batch: int) -> torch.Tensor:
    """(k,) float64: top-k by magnitude of the union of the samples' Ritz values, divided by ``batch`` (the
    batch-mean loss). NaN if any sample's Hessian was non-finite; zeros fill in where the samples' Krylov
    spaces (invariant, e.g. of a low-rank ReLU Hessian) hold fewer than k values (the rest is null space)."""
    known = ~torch.isnan(ritz.values)
    if not bool(known[:, 0].all()):
        return torch.full((k,), float("nan"), dtype=torch.float64)
    pool = ritz.values[known]
    if pool.numel() < k:
        pool = torch.cat([pool, torch.zeros(k - pool.numel(), dtype=torch.float64)])
    return pool[pool.abs().argsort(descending=True)[:k]] / batch


def _check_solver_args(iters, tol) -> None:
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")


def _top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int, tol: float, seed: int,
                    method: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Unchecked core of :func:`top_eigenvalue`; also returns ``info`` (iterations, converged, method, ...)."""
    ritz = _krylov(HessianOperator(model, x, y, method), x, iters=iters, tol=tol, seed=seed)
    values, vectors = _top_from_ritz(ritz, x)
    return values, vectors, _info(ritz)


def _info(ritz: Ritz) -> dict:
    return {"iterations": int(ritz.steps.max()), "converged": int(ritz.converged.sum()), "method": ritz.method,
            "products": ritz.products, "sample_products": ritz.sample_products}


def top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int = EIG_ITERS,
                   tol: float = EIG_TOL, seed: int = 0, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Largest-magnitude eigenvalue of each sample's input Hessian, by batched Lanczos.

    Every sample runs Lanczos with full re-orthogonalisation from a seeded Gaussian start; one batched
    Hessian-vector product per step serves all samples. A sample stops once the estimated error of its
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

    Returns:
        ``(values, vectors)``: (B,) eigenvalue estimates and (B, ...) unit-norm Ritz vectors with
        ``values[i] ≈ vectors[i]ᵀ H_i vectors[i]`` (equal up to rounding).
    """
    method = _check_method(method)
    _check_solver_args(iters, tol)
    x, y = _prepare(model, x, y)
    with eval_mode(model), frozen_params(model):
        values, vectors, _ = _top_eigenvalue(model, x, y, iters=iters, tol=float(tol), seed=seed, method=method)
    return values, vectors


def hessian_spectrum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int = HS_K, *,
                     iters: int = HS_ITERS, tol: float = EIG_TOL, seed: int = 0,
                     method: str = "auto") -> torch.Tensor:
    """Top-``k`` eigenvalues (by magnitude) of the input Hessian of the **batch-mean** cross-entropy.

    This is the paper's curvature metric ("HS"; Li & Spratling 2023, official evaluation code): the Hessian
    of ``mean_i CE(f(x_i), y_i)`` with respect to the whole batch ``x`` (a (B·D, B·D) matrix). In eval mode
    samples do not interact, so it is block-diagonal with blocks ``H_i / B``, and its spectrum is the union
    of the per-sample spectra divided by B. Each sample's top of the spectrum is found by batched Lanczos
    (see :func:`top_eigenvalue`) and the k largest magnitudes of the union are kept; a sample stops as soon as
    none of its remaining eigenvalues can enter that top-k (so most samples stop after a few steps).
    ``hs = hessian_spectrum(...).abs().mean()``.

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode.
        x: (B, ...) inputs (the batch; the result depends on B through the 1/B and the union).
        y: (B,) integer labels.
        k: number of eigenvalues, 1 <= k <= B·D. Default 20 (the official evaluation's).
        iters: most Lanczos steps per sample. Default 60.
        tol: relative error goal of each kept eigenvalue. Default 1e-3.
        seed: seeds the start vectors. Default 0.
        method: Hessian-vector product method, see :func:`hvp`.

    Returns:
        (k,) float64 tensor of eigenvalues (signed) sorted by decreasing magnitude, on the CPU.

    Example:
        >>> model = create_model("mlp", hidden=(16,), activation="softplus")
        >>> hessian_spectrum(model, torch.rand(4, 1, 8, 8), torch.arange(4), k=5).shape
        torch.Size([5])
    """
    method = _check_method(method)
    _check_solver_args(iters, tol)
    x, y = _prepare(model, x, y)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= x.numel():
        raise ValueError(f"k must be an integer in [1, B·D = {x.numel()}], got {k!r}")
    with eval_mode(model), frozen_params(model):
        ritz = _krylov(HessianOperator(model, x, y, method), x, iters=iters, tol=float(tol), seed=seed,
                       top=False, k=k)
    return _spectrum_from_ritz(ritz, k, x.shape[0])


# ------------------------------------------------------------------------------- registry entries
# (adapters from a measured batch to the functions above; see landscape/measures/registry.py)

def _rademacher(shape: torch.Size, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 2, shape, generator=g, device=device).to(dtype) * 2 - 1


def _operator(ctx: BatchContext) -> HessianOperator:
    """The batch's Hessian operator at ``ctx.x``, built once per point and shared by every curvature measure
    of the batch (its kept first backward makes each further product one more backward)."""
    cache = ctx.state.setdefault("cache", {})
    key = f"hessian_operator_{ctx.point}"
    if key not in cache:
        cache[key] = HessianOperator(ctx.model, ctx.x, ctx.y, ctx.state["hvp_method"])
    return cache[key]


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


def _eig_top_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    op = _operator(ctx)
    ritz = _krylov(op, ctx.x, iters=ctx.eig_iters, tol=EIG_TOL, seed=ctx.seed_for(STREAM_EIG))
    ctx.state["hvp_method"] = ritz.method
    ctx.state["eig_unconverged"] = ctx.state.get("eig_unconverged", 0) + ctx.x.shape[0] - int(ritz.converged.sum())
    return {"eig_top": _top_from_ritz(ritz, ctx.x)[0]}


def _hs_measure(ctx: BatchContext) -> dict[str, torch.Tensor]:
    """The paper's HS of the batch: mean |top-20 eigenvalue| of the batch-mean loss's input Hessian (0-d)."""
    op = _operator(ctx)
    ritz = _krylov(op, ctx.x, iters=max(ctx.eig_iters, HS_ITERS), tol=EIG_TOL, seed=ctx.seed_for(STREAM_EIG),
                   top=False, k=HS_K)
    ctx.state["hvp_method"] = ritz.method
    return {"hs": _spectrum_from_ritz(ritz, HS_K, ctx.x.shape[0]).abs().mean()}


_CURV_UNIT = "dᵀHd/‖d‖², nats / unit²"
CURV_ADV = MeasureSpec("curv_adv", ("curv_adv",), _curv_adv_measure, "curvature along adv. direction", _CURV_UNIT,
                       default=True, paper="")
CURV_RAND = MeasureSpec("curv_rand", ("curv_rand",), _curv_rand_measure, "curvature along random direction",
                        _CURV_UNIT, default=True, paper="")
# eig_top and hs run a Lanczos solve each (about K + 1 products): opt-in, see benchmarks/bench_units.py
EIG_TOP = MeasureSpec("eig_top", ("eig_top",), _eig_top_measure, "top Hessian eigenvalue", "nats / unit²",
                      default=False, paper="")
HS = MeasureSpec("hs", ("hs",), _hs_measure, "mean |top-20 eigenvalue| (HS)", "nats / unit²", per_batch=True,
                 paper="HS: mean |top-20 eigenvalue| of the batch-mean loss's input Hessian (official evaluation)")
