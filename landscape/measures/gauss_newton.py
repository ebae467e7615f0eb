"""Exact input-Hessian spectra of piecewise-linear classifiers from their logit Jacobian.

When a network's logits are piecewise linear in its input (ReLU/LeakyReLU, max-pooling, convolutions,
linear layers, batch-norm in eval mode), their second derivative is zero almost everywhere and the input
Hessian of sample i's cross-entropy is exactly its Gauss–Newton form

    H_i = J_iᵀ A_i J_i,    J_i = ∂z_i/∂x_i (K, D),    A_i = diag(p_i) − p_i p_iᵀ (K, K), p_i = softmax(z_i).

Its non-zero eigenvalues are those of the K×K matrix ``M_i = A_i^½ J_i J_iᵀ A_i^½``, and an eigenvector u of
M_i with eigenvalue λ gives the eigenvector ``J_iᵀ A_i^½ u`` (norm √λ) of H_i. So the whole spectrum of every
sample costs the K backward passes of the logit Jacobian, where Lanczos spends at least K Hessian-vector
products (each one more backward through a double-backward graph) on the same rank-(K−1) matrix.

Nothing is assumed about the model: the neglected term ``R_i = Σ_k c_k ∇²z_k`` (c = ∂L/∂z = p − e_y held
fixed) is **measured per sample**, as ``R v = ∇ₓ(v · ∇ₓ(cᵀz))``, one double backward per vector, which is
exactly 0 for piecewise-linear logits (the test cannot be fooled by rounding, unlike a comparison of Hv with
JᵀAJv, which loses its digits to cancellation at confident samples). It is applied to two seeded Gaussian
probes and to the top eigenvector u found. For Gaussian v, ``E‖R v‖² = ‖R‖_F² ‖v‖²/D``, so
``√D ‖R v‖ / ‖v‖`` estimates ‖R‖_F ≥ ‖R‖₂, which by Weyl's inequality bounds how far any eigenvalue of H
moves from that of JᵀAJ; ``‖R u‖`` is the residual ‖H u − λ u‖, so an eigenvalue of H lies within it of λ.
A sample is accepted when the largest of the three is at most ``tol · |λ_top|``; a smooth network (softplus,
GELU, SiLU, tanh, attention) fails and its samples are left to Lanczos. The probes are a randomised test: a
neglected term of rank one, σ·wwᵀ, is seen as σ·|N(0,1)| by each, so both miss a term 10× over the tolerance
with probability about 0.6 % (and the residual of u must still pass).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .lanczos import Ritz

__all__ = ["GaussNewton", "factor", "ritz", "rules_out", "logit_jacobian", "output_hessian", "logit_curvature_products"]

PROBES = 2
"""Gaussian probes of the neglected logit-curvature term per sample (besides the top eigenvector)."""
JACOBIAN_CHUNK = 16
"""Classes back-propagated together by the batched Jacobian (bounds its activation-gradient memory)."""


class GaussNewton(NamedTuple):
    """The per-sample K×K reduction of a batch's input Hessians (B samples, K logits, D input entries).

    jacobian: (B, K, D) logit Jacobians in x's dtype and device.
    values: (B, K) float64 eigenvalues of ``M_i`` (ascending; those of H_i beside D − K zeros).
    vector: (B, D) unit eigenvector of the largest-magnitude value, in x's dtype and device (any unit vector
        where H_i = 0).
    bound: (B,) float64 measured size of the neglected term (see the module docstring).
    exact: (B,) bool, the sample passed the test: its spectrum here is H_i's.
    """

    jacobian: torch.Tensor
    values: torch.Tensor
    vector: torch.Tensor
    bound: torch.Tensor
    exact: torch.Tensor


def _vjps(output: torch.Tensor, x: torch.Tensor, cotangents: torch.Tensor, batched: bool | None) -> torch.Tensor:
    """(m, B, ...) gradients of ``output`` with respect to the leaf ``x``, one per cotangent of ``cotangents``
    (m, *output.shape) (zeros where ``output`` does not reach ``x``). Batched (``is_grads_batched``,
    :data:`JACOBIAN_CHUNK` at a time) on accelerators, where the larger batch is faster, and one at a time
    on the CPU, where it is not (and needs no vmap rule for every operator); ``batched`` overrides that
    choice. The graph of ``output`` is retained."""
    def grads(cot: torch.Tensor, many: bool) -> torch.Tensor:
        (r,) = torch.autograd.grad(output, x, grad_outputs=cot, retain_graph=True, allow_unused=True,
                                   is_grads_batched=many)
        shape = (cot.shape[0], *x.shape) if many else x.shape
        return torch.zeros(shape, device=x.device, dtype=x.dtype) if r is None else r.detach()

    with torch.enable_grad():
        if batched if batched is not None else x.device.type != "cpu":
            try:
                return torch.cat([grads(cotangents[c:c + JACOBIAN_CHUNK], True)
                                  for c in range(0, cotangents.shape[0], JACOBIAN_CHUNK)])
            except torch.OutOfMemoryError:
                raise
            except (RuntimeError, NotImplementedError):  # an operator without a batching rule
                pass
        return torch.stack([grads(cot, False) for cot in cotangents])


def logit_jacobian(x: torch.Tensor, logits: torch.Tensor, *, batched: bool | None = None) -> torch.Tensor:
    """(B, K, D) Jacobian of the logits (B, K) with respect to the leaf ``x`` (B, ...) of their graph.

    Samples do not interact (eval mode), so back-propagating the one-hot of class k for every sample at once
    gives row k of every J_i: K backward passes (see :func:`_vjps` for ``batched``). The graph is retained
    for further products.
    """
    k = logits.shape[1]
    eye = torch.eye(k, device=logits.device, dtype=logits.dtype)
    jac = _vjps(logits, x, eye[:, None, :].expand(k, *logits.shape), batched)  # (K, B, ...)
    return jac.flatten(2).transpose(0, 1).contiguous()


def output_hessian(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, K) float64 Hessian of the cross-entropy in the logits, ``diag(p) − ppᵀ`` (free of the label)."""
    p = logits.detach().double().softmax(1)
    return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of PSD matrices (B, K, K) (negative rounding-level eigenvalues clipped)."""
    w, u = torch.linalg.eigh(a)
    return (u * w.clamp_min(0).sqrt()[:, None, :]) @ u.transpose(1, 2)


def logit_curvature_products(x: torch.Tensor, logits: torch.Tensor, c: torch.Tensor, vectors: list[torch.Tensor],
                             *, batched: bool | None = None) -> list[torch.Tensor]:
    """``R v = ∇ₓ(v · ∇ₓ(cᵀz))`` for each (B, ...) vector v: the logit-curvature part of the input Hessian,
    ``Σ_k c_k ∇²z_k v`` per sample, with the (B, K) weights ``c`` held fixed. Exactly zero (not rounding)
    for piecewise-linear logits. Batched into one double backward on accelerators (see :func:`_vjps` for
    ``batched``). The graph of ``logits`` is retained.

    Raises:
        RuntimeError: ``∇ₓ(cᵀz)`` does not depend on x (affine logits cannot be told from a backward that
            detaches; the caller then uses Lanczos, whose kept graph detects the latter).
    """
    with torch.enable_grad():
        (g,) = torch.autograd.grad(logits, x, grad_outputs=c.detach(), retain_graph=True, create_graph=True)
        if not g.requires_grad:  # affine logits, or a backward that detaches: no way to tell them apart here
            raise RuntimeError("the logit gradient does not depend on the input (affine logits or a detached "
                               "backward): the Gauss–Newton test cannot run")
    return list(_vjps(g, x, torch.stack(vectors), batched).unbind(0))


def factor(x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, *, tol: float, seed: int) -> GaussNewton:
    """The Gauss–Newton reduction of a batch and its per-sample test (see the module docstring).

    Args:
        x: (B, ...) the input leaf of ``logits``' graph (``requires_grad``).
        logits: (B, K) logits of ``x`` with their graph (retained).
        y: (B,) labels.
        tol: relative eigenvalue accuracy a sample must reach to be accepted.
        seed: seeds the Gaussian probes.
    """
    jac = logit_jacobian(x, logits)
    a = output_hessian(logits).cpu()  # the K×K algebra runs in float64 on the CPU
    gram = torch.bmm(jac, jac.transpose(1, 2)).double().cpu()
    # NaN logits or Jacobians (a diverged sample) are left to Lanczos, which reports them as NaN
    finite = torch.isfinite(a).flatten(1).all(1) & torch.isfinite(gram).flatten(1).all(1)
    a = torch.where(finite[:, None, None], a, torch.zeros_like(a))
    half = _sqrt_psd(a)
    values, vecs = torch.linalg.eigh(half @ torch.where(finite[:, None, None], gram, torch.zeros_like(gram)) @ half)
    top = values.abs().argmax(1)
    coef = (half @ vecs).gather(2, top[:, None, None].expand(-1, values.shape[1], 1))[:, :, 0]
    vec = torch.einsum("bkd,bk->bd", jac, coef.to(device=jac.device, dtype=jac.dtype))
    norm = vec.norm(dim=1, keepdim=True)
    fill = torch.full_like(vec, vec.shape[1] ** -0.5)  # H_i = 0: every unit vector is an eigenvector
    vec = torch.where(norm > 0, vec / norm.clamp_min(torch.finfo(vec.dtype).tiny), fill)

    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    probes = [torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) for _ in range(PROBES)]
    c = logits.detach().softmax(1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)
    products = logit_curvature_products(x, logits, c, [*probes, vec.view(x.shape)])
    dim = vec.shape[1]
    sizes = [(r.flatten(1).double().norm(dim=1) * dim ** 0.5 / v.flatten(1).double().norm(dim=1))
             for r, v in zip(products, probes)]
    sizes.append(products[-1].flatten(1).double().norm(dim=1))  # the residual ‖H u − λ u‖ of the unit u
    bound = torch.stack(sizes, 1).amax(1).cpu()
    bound = torch.where(finite, bound, torch.full_like(bound, float("nan")))  # nothing measured on NaN samples
    exact = finite & (bound <= float(tol) * values.abs().amax(1))
    return GaussNewton(jac, values, vec, bound, exact)


def rules_out(gn: GaussNewton | None) -> bool:
    """True when the test could not run (``None``) or every sample it could measure failed it (NaN samples
    aside): a smooth model, whose later batches can go straight to Lanczos."""
    return gn is None or (not bool(gn.exact.any()) and bool(torch.isfinite(gn.bound).any()))


def ritz(gn: GaussNewton, index: torch.Tensor, method: str) -> Ritz:
    """The samples ``index`` of ``gn`` as a :class:`~landscape.measures.lanczos.Ritz` result: exact values
    (errors = the measured bound), the unit eigenvector of the largest-magnitude value, no Lanczos steps (the
    products counted are the test's)."""
    values = gn.values[index]
    n = index.numel()
    return Ritz(values, gn.bound[index, None].expand_as(values).clone(), values.abs().argmax(1),
                gn.vector[index.to(gn.vector.device)], torch.zeros(n, dtype=torch.long),
                torch.ones(n, dtype=torch.bool), PROBES + 1, (PROBES + 1) * n, method, "gauss_newton")
