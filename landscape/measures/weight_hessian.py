"""The weight-space Hessian of a probe set's mean loss, and its spectrum: top eigenvalues, trace, density.

``H = ∇²_w L(w)`` with ``L(w) = (1/N) Σ_i CE(f_w(x_i), y_i)`` over a probe given as a list of batches
``[(x (B_b, ...), y (B_b,)), ...]`` (N = Σ B_b). Hessian-vector products are exact (double backpropagation
through :func:`torch.func.functional_call`) and accumulated over the batches weighted by their size, as
PyHessian accumulates them over a loader; vectors are flat, ``(n,)`` with n the number of selected weights.
The robust loss is the same operator on ``[(x_adv, y), ...]`` (``x_adv`` fixed).

* :class:`WeightHessian` — the operator, optionally restricted to the parameters whose names match a glob
  (``layers="fc2.*"``);
* :func:`top_eigenvalues` — the k largest eigenvalues by Lanczos with full reorthogonalisation, with each
  Ritz value's residual ``‖H u − θ u‖`` reported and a stated tolerance;
* :func:`hutchinson_trace` — Hutchinson's estimate (Rademacher probes) with its standard error;
* :func:`spectral_density` — stochastic Lanczos quadrature with Gaussian broadening, as a DataFrame.

Every function leaves the model as it found it: :func:`preserved` puts it in eval mode, and restores its
parameters, buffers, modes, ``requires_grad`` flags and ``.grad`` exactly (bit for bit) on exit, also when
the measure raises. The model's parameters are never differentiated in place (``functional_call`` on
detached leaves), so no ``.grad`` is written, and randomness comes from a ``torch.Generator`` seeded by
``seed`` (the global RNG is not touched).
"""
from __future__ import annotations

import contextlib
import fnmatch
import math
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .._base import check_labels_fit, derive_seed, per_sample_loss
from ._autograd import check_model

__all__ = ["Batches", "select_parameters", "preserved", "WeightHessian", "TopEigen", "top_eigenvalues",
           "TraceEstimate", "hutchinson_trace", "Density", "spectral_density", "lanczos_tridiagonal"]

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
"""A probe set: ``[(x (B, ...), y (B,)), ...]``."""

_TINY = 1e-30


# --------------------------------------------------------------------------- model plumbing


def select_parameters(model: nn.Module, layers: str | None = None) -> list[str]:
    """Names of the parameters ``layers`` selects (an :mod:`fnmatch` glob on ``named_parameters`` names, e.g.
    ``"fc2.*"``; several globs separated by commas; None = every parameter), in the model's order.

    Raises:
        ValueError: nothing matches (the available names are listed).
    """
    names = [n for n, _ in model.named_parameters()]
    if layers is None:
        chosen = names
    else:
        if not isinstance(layers, str) or not layers.strip():
            raise ValueError(f"layers must be a glob pattern such as 'fc2.*', got {layers!r}")
        globs = [g.strip() for g in layers.split(",") if g.strip()]
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        raise ValueError(f"layers={layers!r} matches no parameter (available: {', '.join(names) or 'none'})")
    return chosen


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside; on exit (also on an exception) every parameter and buffer gets its saved value back
    bit for bit, and each submodule's mode, each parameter's ``requires_grad`` and ``.grad`` are restored.
    Measures that perturb weights in place rely on this."""
    check_model(model)
    saved = [(t, t.detach().clone()) for t in (*model.parameters(), *model.buffers())]
    flags = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        with torch.no_grad():
            for t, value in saved:
                if not torch.equal(t, value):  # untouched tensors keep their version (kept graphs stay valid)
                    t.copy_(value)
        for p, flag, grad in flags:
            p.requires_grad_(flag)
            p.grad = grad
        for m, was_training in modes:
            m.training = was_training


def check_batches(model: nn.Module, batches: Batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` as a list of detached ``(x, y)`` on the model's device and dtype (ValueError when empty)."""
    if isinstance(batches, tuple) and len(batches) == 2 and isinstance(batches[0], torch.Tensor):
        batches = [batches]  # one (x, y) pair
    out = []
    param = next(iter(model.parameters()), None)
    for item in batches:
        if len(item) < 2:
            raise ValueError("each probe batch must be an (x, y) pair")
        x, y = item[0], item[1]
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError("a probe batch must hold tensors (x, y)")
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"a probe batch has {x.shape[0]} inputs and {y.shape[0]} labels")
        if param is not None:
            x = x.to(device=param.device, dtype=param.dtype if x.is_floating_point() else x.dtype)
            y = y.to(param.device)
        out.append((x.detach(), y.detach()))
    if not out:
        raise ValueError("the probe set is empty")
    return out


def functional_loss(model: nn.Module, values: dict[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``model`` with the parameters ``values`` substituted (others as they are)."""
    logits = torch.func.functional_call(model, values, (x,))
    check_labels_fit(logits, y)
    return per_sample_loss(logits, y).sum()


def probe_loss_grad(model: nn.Module, batches: Batches, names: Sequence[str]) -> tuple[float, list[torch.Tensor]]:
    """(mean loss over the probe, its gradient w.r.t. the parameters ``names``, one tensor each), detached.
    The model must be in eval mode; its parameters are not differentiated in place."""
    params = dict(model.named_parameters())
    total = sum(int(x.shape[0]) for x, _ in batches)
    grads = [torch.zeros_like(params[n]) for n in names]
    loss_sum = 0.0
    for x, y in batches:
        with torch.enable_grad():
            leaves = {n: params[n].detach().requires_grad_(True) for n in names}
            loss = functional_loss(model, leaves, x, y)
            parts = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
        loss_sum += float(loss.detach())
        for g, part in zip(grads, parts):
            if part is not None:
                g.add_(part.detach())
    return loss_sum / total, [g / total for g in grads]


def probe_loss(model: nn.Module, batches: Batches) -> float:
    """Mean cross-entropy over the probe (no gradient)."""
    total, loss_sum = 0, 0.0
    with torch.no_grad():
        for x, y in batches:
            logits = model(x)
            check_labels_fit(logits, y)
            loss_sum += float(per_sample_loss(logits, y).sum())
            total += int(x.shape[0])
    return loss_sum / total


# --------------------------------------------------------------------------- the operator


class WeightHessian:
    """``v ↦ H v``, the Hessian of the probe's mean loss w.r.t. the selected weights, on flat vectors (n,).

    Args:
        model: the classifier; used in its current mode (wrap calls in :func:`preserved` for eval mode).
        batches: ``[(x (B, ...), y (B,)), ...]``; the loss is the mean over all N samples, so batch b's
            Hessian enters with weight ``B_b / N``.
        layers: glob of parameter names (:func:`select_parameters`); None = every parameter.
        keep_graph: keep each batch's first backward pass, so that a product costs one more backward per
            batch (memory: the double-backward activations of the whole probe); False rebuilds it for each
            product (memory of one batch, about twice the time).

    Attributes:
        names, shapes: the selected parameters; ``n``: their total size; ``products``: HVPs taken so far.
    """

    def __init__(self, model: nn.Module, batches: Batches, layers: str | None = None, *, keep_graph: bool = True):
        check_model(model)
        self.model = model
        self.batches = check_batches(model, batches)
        self.names = select_parameters(model, layers)
        params = dict(model.named_parameters())
        self.shapes = [params[n].shape for n in self.names]
        self.sizes = [params[n].numel() for n in self.names]
        self.n = int(sum(self.sizes))
        self.dtype, self.device = params[self.names[0]].dtype, params[self.names[0]].device
        self.total = sum(int(x.shape[0]) for x, _ in self.batches)
        self.keep_graph = keep_graph
        self.products = 0
        self._graphs: list | None = None

    def flatten(self, tensors: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Per-parameter tensors -> one flat (n,) vector (None -> zeros)."""
        return torch.cat([(torch.zeros(s, dtype=self.dtype, device=self.device) if t is None else t.reshape(-1))
                          for t, s in zip(tensors, self.sizes)])

    def unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        """A flat (n,) vector -> per-parameter tensors shaped like the selected parameters."""
        return [part.view(shape) for part, shape in zip(torch.split(v, self.sizes), self.shapes)]

    def _graph(self, x: torch.Tensor, y: torch.Tensor):
        params = dict(self.model.named_parameters())
        with torch.enable_grad():
            # cloned leaves: a later in-place change of the parameters cannot reach a kept graph
            leaves = [params[n].detach().clone().requires_grad_(True) for n in self.names]
            loss = functional_loss(self.model, dict(zip(self.names, leaves)), x, y) / self.total
            grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        return leaves, grads, loss.detach()

    def graphs(self) -> list:
        if self._graphs is None:
            self._graphs = [self._graph(x, y) for x, y in self.batches]
        return self._graphs

    def _product(self, graph, parts: list[torch.Tensor], out: list[torch.Tensor], retain: bool) -> None:
        leaves, grads, _ = graph
        used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        if not used:
            return
        with torch.enable_grad():
            hv = torch.autograd.grad([grads[i] for i in used], leaves, grad_outputs=[parts[i] for i in used],
                                     retain_graph=retain, allow_unused=True)
        for o, h in zip(out, hv):
            if h is not None:
                o.add_(h)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """(n,) -> (n,): ``H v``, detached."""
        if v.shape != (self.n,):
            raise ValueError(f"v must have shape ({self.n},), got {tuple(v.shape)}")
        parts = self.unflatten(v.to(dtype=self.dtype, device=self.device))
        out = [torch.zeros(s, dtype=self.dtype, device=self.device) for s in self.shapes]
        if self.keep_graph:
            for graph in self.graphs():
                self._product(graph, parts, out, retain=True)
        else:
            for x, y in self.batches:
                self._product(self._graph(x, y), parts, out, retain=False)
        self.products += 1
        return torch.cat([o.reshape(-1) for o in out]).detach()

    def dense(self) -> torch.Tensor:
        """(n, n): the whole Hessian, one product per column (for small nets and tests)."""
        eye = torch.eye(self.n, dtype=self.dtype, device=self.device)
        return torch.stack([self(eye[i]) for i in range(self.n)], dim=1)


# --------------------------------------------------------------------------- Lanczos


def lanczos_tridiagonal(op, v0: torch.Tensor, steps: int, *, stop=None):
    """Lanczos with full reorthogonalisation from ``v0`` (n,): ``(alpha (m,), beta (m,), Q (m, n))`` with
    ``T = tridiag(beta[:-1], alpha, beta[:-1])``, m ≤ ``steps``; ``beta[-1]`` is the norm of the last
    residual. ``stop(alpha, beta)`` may end it early (checked after each step); an invariant subspace
    (residual norm below 1e-12·‖T‖) ends it too. Memory: m·n numbers."""
    n = v0.numel()
    steps = max(1, min(int(steps), n))
    q = v0 / v0.norm().clamp_min(_TINY)
    basis: list[torch.Tensor] = []
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    for _ in range(steps):
        basis.append(q)
        w = op(q)
        a = float(torch.dot(w, q))
        Q = torch.stack(basis)
        w = w - Q.T @ (Q @ w)  # full reorthogonalisation, twice ("twice is enough")
        w = w - Q.T @ (Q @ w)
        b = float(w.norm())
        alphas.append(a)
        betas.append(b)
        scale = max(scale, abs(a), b)
        if b <= 1e-12 * max(scale, _TINY) or len(basis) == n:
            break
        if stop is not None and stop(alphas, betas):
            break
        q = w / b
    return (torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64),
            torch.stack(basis))


def _ritz(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the tridiagonal T, in float64."""
    t = torch.diag(alpha)
    if alpha.numel() > 1:
        off = beta[:-1]
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(t)


class TopEigen(NamedTuple):
    """``values`` (k,) largest eigenvalues, descending; ``residuals`` (k,) ``‖H u − θ u‖`` of each Ritz pair
    (Ritz estimate ``|β_m s_m|``, exact in exact arithmetic with full reorthogonalisation); ``vectors``
    (k, n) unit Ritz vectors; ``steps`` Lanczos steps taken; ``converged``: every residual ≤ tol·|θ|."""

    values: torch.Tensor
    residuals: torch.Tensor
    vectors: torch.Tensor
    steps: int
    converged: bool


def _start(n: int, seed: int, dtype, device, kind: str = "gaussian") -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    if kind == "rademacher":
        v = torch.randint(0, 2, (n,), generator=g, dtype=torch.int8).to(torch.float64) * 2 - 1
    else:
        v = torch.randn(n, generator=g, dtype=torch.float64)
    return v.to(dtype=dtype, device=device)


def top_eigenvalues(op: WeightHessian, k: int = 1, *, max_steps: int = 100, tol: float = 1e-4,
                    seed: int = 0) -> TopEigen:
    """The ``k`` largest (algebraic) eigenvalues of ``op`` by Lanczos with full reorthogonalisation.

    Stops when every one of the top-k Ritz pairs has ``‖H u − θ u‖ ≤ tol·|θ|`` (the eigenvalue error is
    then at most that residual, usually about its square over the gap), at an invariant subspace (exact), or
    after ``max_steps`` products (``converged`` False). Start vector: Gaussian from ``seed``.

    Args:
        op: a :class:`WeightHessian` (or any callable (n,) -> (n,) with ``n``, ``dtype``, ``device``).
        k: how many eigenvalues. Default 1.
        max_steps: most Lanczos steps (= Hessian-vector products). Default 100.
        tol: relative residual tolerance. Default 1e-4.
        seed: start vector seed. Default 0.

    Returns:
        :class:`TopEigen`.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")

    def done(alphas, betas) -> bool:
        if len(alphas) < k:
            return False
        theta, s = _ritz(torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64))
        res = (betas[-1] * s[-1, -k:]).abs()
        return bool((res <= tol * theta[-k:].abs().clamp_min(_TINY)).all())

    v0 = _start(op.n, seed, op.dtype, op.device)
    alpha, beta, basis = lanczos_tridiagonal(op, v0, max(max_steps, k), stop=done)
    theta, s = _ritz(alpha, beta)
    m = alpha.numel()
    last = 0.0 if m == op.n else float(beta[-1])
    kk = min(k, m)
    values = theta[-kk:].flip(0)
    coeffs = s[:, -kk:].flip(1)
    residuals = (last * coeffs[-1]).abs()
    vectors = (coeffs.T.to(basis.dtype).to(basis.device) @ basis)
    converged = bool((residuals <= tol * values.abs().clamp_min(_TINY)).all()) and kk == k
    return TopEigen(values, residuals, vectors, m, converged)


# --------------------------------------------------------------------------- trace


class TraceEstimate(NamedTuple):
    """``trace`` estimate, its standard error ``se`` (sample std / √samples), ``samples`` probes used and
    ``converged`` (``se ≤ rtol·|trace|`` reached before ``max_samples``)."""

    trace: float
    se: float
    samples: int
    converged: bool


def hutchinson_trace(op: WeightHessian, *, rtol: float = 0.05, min_samples: int = 10, max_samples: int = 200,
                     seed: int = 0) -> TraceEstimate:
    """Hutchinson's trace estimate ``tr H ≈ mean_j v_jᵀ H v_j`` with Rademacher ``v_j`` (Hutchinson 1989), as
    PyHessian's ``trace()`` computes it, with the standard error of the mean. Stops once ``min_samples``
    probes are drawn and ``se ≤ rtol·|trace|``, or at ``max_samples``. Probes from a generator seeded by
    ``seed`` (the j-th probe is the same whatever the stopping point).

    Returns:
        :class:`TraceEstimate`.
    """
    if not (isinstance(min_samples, int) and isinstance(max_samples, int) and 2 <= min_samples <= max_samples):
        raise ValueError(f"need integers 2 <= min_samples <= max_samples, got {min_samples!r}, {max_samples!r}")
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    values: list[float] = []
    mean = se = float("nan")
    for j in range(max_samples):
        v = (torch.randint(0, 2, (op.n,), generator=g, dtype=torch.int8).to(op.dtype) * 2 - 1).to(op.device)
        values.append(float(torch.dot(v, op(v))))
        if j + 1 >= 2:
            a = np.asarray(values)
            mean, se = float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))
            if j + 1 >= min_samples and se <= rtol * abs(mean):
                return TraceEstimate(mean, se, j + 1, True)
    return TraceEstimate(mean, se, len(values), False)


# --------------------------------------------------------------------------- density


class Density(NamedTuple):
    """``table``: DataFrame ``grid, density`` (integrates to 1); ``nodes`` (R, m) and ``weights`` (R, m):
    the quadrature of each of the R runs (weights of a run sum to 1); ``sigma``: the Gaussian broadening;
    ``negative_mass``: the quadrature's weight on negative nodes (the share of the spectrum below 0,
    before broadening, which would smear the cluster at 0 over both signs);
    ``std``: the standard deviation of the quadrature (the spread of the spectrum, broadening left out);
    ``mean``: its mean (≈ tr H / n)."""

    table: pd.DataFrame
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float
    negative_mass: float
    std: float
    mean: float


def spectral_density(op: WeightHessian, *, runs: int = 4, steps: int = 40, sigma: float | None = None,
                     rel_sigma: float = 0.01, points: int = 1000, seed: int = 0) -> Density:
    """The Hessian's spectral density by stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ghorbani et al.
    2019, as PyHessian's ``density()``): ``runs`` Lanczos runs of ``steps`` steps from unit Rademacher
    vectors; run r gives nodes θ_rj (Ritz values) and weights τ_rj (squared first components of the Ritz
    vectors); the density is ``φ(t) = (1/R) Σ_r Σ_j τ_rj N(t; θ_rj, σ²)``.

    Args:
        op: a :class:`WeightHessian`.
        runs: R, Lanczos runs. Default 4.
        steps: Lanczos steps per run (at most n). Default 40.
        sigma: Gaussian broadening; default ``rel_sigma`` × (spread of the nodes).
        rel_sigma: see ``sigma``. Default 0.01.
        points: grid points. Default 1000.
        seed: seed of the start vectors.

    Returns:
        :class:`Density`; its table's grid spans the nodes ± 6σ, and the density is divided by its trapezoid
        integral on that grid (a correction below 1e-6 with the defaults), so it integrates to 1.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    nodes, weights = [], []
    for r in range(runs):
        v0 = _start(op.n, derive_seed(seed, r), op.dtype, op.device, kind="rademacher")
        alpha, beta, _ = lanczos_tridiagonal(op, v0, steps)
        theta, s = _ritz(alpha, beta)
        nodes.append(theta)
        weights.append(s[0] ** 2)
    m = max(t.numel() for t in nodes)
    pad = lambda t, fill: torch.cat([t, torch.full((m - t.numel(),), fill, dtype=torch.float64)])  # noqa: E731
    theta = torch.stack([pad(t, 0.0) for t in nodes])
    tau = torch.stack([pad(w / w.sum(), 0.0) for w in weights])
    lo, hi = float(theta[tau > 0].min()), float(theta[tau > 0].max())
    width = hi - lo
    if sigma is None:
        sigma = rel_sigma * (width if width > 0 else max(abs(hi), 1.0))
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    grid = torch.linspace(lo - 6 * sigma, hi + 6 * sigma, int(points), dtype=torch.float64)
    kernel = torch.exp(-0.5 * ((grid[:, None] - theta.reshape(1, -1)) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = (kernel * tau.reshape(1, -1)).sum(1) / runs
    density = density / torch.trapezoid(density, grid)
    neg = float((tau * (theta < 0)).sum() / runs)
    mean = float((tau * theta).sum() / runs)
    second = float((tau * theta ** 2).sum() / runs)
    table = pd.DataFrame({"grid": grid.numpy(), "density": density.numpy()})
    return Density(table, theta, tau, float(sigma), neg, math.sqrt(max(second - mean ** 2, 0.0)), mean)
