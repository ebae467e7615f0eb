"""Exact input-Hessian spectra of piecewise-linear classifiers from their logit Jacobian.

When a network's logits are piecewise linear in its input (ReLU/LeakyReLU, max-pooling, convolutions,
linear layers, batch-norm in eval mode), their second derivative is zero almost everywhere and the input
Hessian of sample i's cross-entropy is exactly its Gauss–Newton form

    H_i = J_iᵀ A_i J_i,    J_i = ∂z_i/∂x_i (K, D),    A_i = diag(p_i) − p_i p_iᵀ (K, K), p_i = softmax(z_i).

Its non-zero eigenvalues are those of the K×K matrix ``M_i = A_i^½ J_i J_iᵀ A_i^½``, and an eigenvector u of
M_i with eigenvalue λ gives the eigenvector ``J_iᵀ A_i^½ u`` (norm √λ) of H_i. So the whole spectrum of every
sample costs the K backward passes of the logit Jacobian, where Lanczos spends at least K Hessian-vector
products (each one more backward through a double-backward graph) on the same rank-(K−1) matrix.

Nothing is assumed about the model: the form is **tested per sample** with one exact Hessian-vector product
on a seeded Gaussian probe v. The neglected term is ``R_i = Σ_k (∂L/∂z_k) ∇²z_k``; since ``E‖R v‖² =
‖R‖_F² ‖v‖²/D`` for Gaussian v, ``bound = √D ‖H v − JᵀAJ v‖ / ‖v‖`` estimates ‖R‖_F ≥ ‖R‖₂, which by Weyl's
inequality bounds how far any eigenvalue of H moves from that of JᵀAJ. A sample is accepted when
``bound ≤ max(tol, min(1000·eps(dtype), 1e-2)) · |λ_top|`` (the second term is rounding: float32 products agree to
about 1e-6 relative); a smooth network (softplus, GELU, tanh, attention) fails the test and its samples
are left to Lanczos. One probe is a randomised test: a neglected term whose only large direction is nearly
orthogonal to v is underestimated, by a factor that is rarely above 10 (``|N(0,1)| < 0.1`` has probability 8 %).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from .lanczos import Ritz

__all__ = ["GaussNewton", "factor", "ritz"]

ROUNDING = 1000
"""The acceptance threshold is at least this many machine epsilons of the dtype (relative to |λ_top|)..."""
MAX_ROUNDING = 1e-2
"""... but never above this (bfloat16/float16 models: their rounding would otherwise accept anything)."""


class GaussNewton(NamedTuple):
    """The per-sample K×K reduction of a batch's input Hessians (B samples, K logits, D input entries).

    jacobian: (B, K, D) logit Jacobians in x's dtype and device.
    values: (B, K) float64 eigenvalues of ``M_i`` (ascending; those of H_i beside D − K zeros).
    coef: (B, K, K) float64 ``A_i^½ U_i`` (columns: the Jacobian coefficients of the eigenvectors of H_i).
    bound: (B,) float64 probe estimate of how far H_i is from its Gauss–Newton form (see module docstring).
    exact: (B,) bool, the sample passed the test: its spectrum here is H_i's.
    """

    jacobian: torch.Tensor
    values: torch.Tensor
    coef: torch.Tensor
    bound: torch.Tensor
    exact: torch.Tensor


def logit_jacobian(x: torch.Tensor, logits: torch.Tensor, *, batched: bool | None = None) -> torch.Tensor:
    """(B, K, D) Jacobian of the logits (B, K) with respect to the leaf ``x`` (B, ...) of their graph.

    Samples do not interact (eval mode), so back-propagating the one-hot of class k for every sample at once
    gives row k of every J_i: K backward passes, batched into one (``is_grads_batched``) on accelerators,
    where the larger batch is faster, and one at a time on the CPU, where it is not (and needs no vmap rule
    for every operator); ``batched`` overrides that choice. The graph is retained for further products.
    """
    k = logits.shape[1]
    eye = torch.eye(k, device=logits.device, dtype=logits.dtype)
    with torch.enable_grad():
        if batched if batched is not None else x.device.type != "cpu":
            try:
                (jac,) = torch.autograd.grad(logits, x, grad_outputs=eye[:, None, :].expand(k, *logits.shape),
                                             retain_graph=True, is_grads_batched=True)
                return jac.flatten(2).transpose(0, 1).contiguous()
            except (RuntimeError, NotImplementedError):  # an operator without a batching rule
                pass
        rows = [torch.autograd.grad(logits, x, grad_outputs=eye[c].expand_as(logits), retain_graph=True)[0]
                for c in range(k)]
    return torch.stack(rows, 1).flatten(2)


def output_hessian(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, K) float64 Hessian of the cross-entropy in the logits, ``diag(p) − ppᵀ`` (free of the label)."""
    p = logits.detach().double().softmax(1)
    return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of PSD matrices (B, K, K) (negative rounding-level eigenvalues clipped)."""
    w, u = torch.linalg.eigh(a)
    return (u * w.clamp_min(0).sqrt()[:, None, :]) @ u.transpose(1, 2)


def factor(x: torch.Tensor, logits: torch.Tensor, product: Callable[[torch.Tensor], torch.Tensor], *,
           tol: float, seed: int) -> GaussNewton:
    """The Gauss–Newton reduction of a batch and its per-sample test (see the module docstring).

    Args:
        x: (B, ...) the input leaf of ``logits``' graph (``requires_grad``).
        logits: (B, K) logits of ``x`` with their graph.
        product: the exact Hessian-vector product ``(B, ...) -> (B, ...)`` of the same batch.
        tol: relative eigenvalue accuracy a sample must reach to be accepted (floored at rounding).
        seed: seeds the Gaussian probe.
    """
    jac = logit_jacobian(x, logits)
    a = output_hessian(logits).cpu()  # the K×K algebra runs in float64 on the CPU
    gram = torch.bmm(jac, jac.transpose(1, 2)).double().cpu()
    # NaN logits or Jacobians (a diverged sample) are left to Lanczos, which reports them as NaN
    finite = torch.isfinite(a).flatten(1).all(1) & torch.isfinite(gram).flatten(1).all(1)
    a = torch.where(finite[:, None, None], a, torch.zeros_like(a))
    half = _sqrt_psd(a)
    values, vecs = torch.linalg.eigh(half @ torch.where(finite[:, None, None], gram, torch.zeros_like(gram)) @ half)
    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    v = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    hv = product(v).flatten(1).double()
    jv = torch.einsum("bkd,bd->bk", jac, v.flatten(1)).double()
    ajv = torch.einsum("bkl,bl->bk", a.to(jv.device), jv).to(jac.dtype)
    gnv = torch.einsum("bkd,bk->bd", jac, ajv).double()
    dim = v[0].numel()
    bound = ((hv - gnv).norm(dim=1) * dim ** 0.5 / v.flatten(1).norm(dim=1).double()).cpu()
    threshold = max(float(tol), min(ROUNDING * torch.finfo(x.dtype).eps, MAX_ROUNDING)) * values.abs().amax(1)
    exact = finite & (bound <= threshold)
    return GaussNewton(jac, values, half @ vecs, bound, exact)


def ritz(gn: GaussNewton, index: torch.Tensor, method: str) -> Ritz:
    """The samples ``index`` of ``gn`` as a :class:`~landscape.measures.lanczos.Ritz` result: exact values
    (errors = the probe bound), the unit eigenvector of the largest-magnitude value, no Lanczos steps (the
    one product counted is the probe)."""
    values = gn.values[index]
    top = values.abs().argmax(1)
    coef = gn.coef[index].gather(2, top[:, None, None].expand(-1, values.shape[1], 1))[:, :, 0]
    jac = gn.jacobian[index.to(gn.jacobian.device)]
    vec = torch.einsum("bkd,bk->bd", jac, coef.to(device=jac.device, dtype=jac.dtype))
    vec = vec / vec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(vec.dtype).tiny)
    n = index.numel()
    return Ritz(values, gn.bound[index, None].expand_as(values).clone(), top, vec,
                torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.bool), 1, n, method, "gauss_newton")
