"""Batched Lanczos on per-sample input Hessians: the Krylov eigen-solver behind ``eig_top``, ``hs`` and the
eigen direction of slices (see :mod:`landscape.measures.curvature` for the measures and
:mod:`landscape.measures._autograd` for the operator)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import torch

if TYPE_CHECKING:
    from ._autograd import HessianOperator

# ``op`` below is an _autograd.HessianOperator (or any callable (B, ...) -> (B, ...) with its ``subset``
# interface); the solver sits below the measures that use it and needs nothing else of theirs.
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
    solver: ``"lanczos"``, ``"gauss_newton"`` (:mod:`landscape.measures.gauss_newton`) or both joined by
        ``"+"`` for a batch whose samples were split between them (:func:`_merge`).
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
    solver: str = "lanczos"


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


def _lanczos(op: "HessianOperator", v0: torch.Tensor, *, steps: int,
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


def _merge(b: int, parts: list[tuple[torch.Tensor, Ritz]]) -> Ritz:
    """One result for B samples from results on disjoint index sets (``parts``: (index (n,), Ritz of n))."""
    m = max(r.values.shape[1] for _, r in parts)
    like = parts[0][1].vector
    values = torch.full((b, m), float("nan"), dtype=torch.float64)
    errors = torch.full((b, m), float("inf"), dtype=torch.float64)
    top, steps = torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long)
    converged = torch.zeros(b, dtype=torch.bool)
    vector = torch.empty(b, like.shape[1], device=like.device, dtype=like.dtype)
    for index, r in parts:
        width = r.values.shape[1]
        values[index, :width], errors[index, :width] = r.values, r.errors
        top[index], steps[index], converged[index] = r.top, r.steps, r.converged
        vector[index.to(like.device)] = r.vector
    solvers = "+".join(dict.fromkeys(r.solver for _, r in parts))
    return Ritz(values, errors, top, vector, steps, converged, sum(r.products for _, r in parts),
                sum(r.sample_products for _, r in parts), parts[-1][1].method, solvers)


def _start(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Seeded Gaussian start vectors (B, ...) on x's device."""
    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _krylov(op: "HessianOperator", x: torch.Tensor, *, iters: int, tol: float, seed: int,
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
