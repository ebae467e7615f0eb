"""1D and 2D slices of the *input* loss landscape: L(x + a·d1 + b·d2) on a grid of (a, b).

Directions are small pure functions returning (B, ...) tensors, one direction per sample:

* ``"adversarial"`` — the PGD (or FGSM) perturbation ``x_adv - x`` of each sample;
* ``"gradient"`` — the input gradient ∇ₓ CE(f(x), y);
* ``"random"`` — Rademacher (±1) or Gaussian noise from a seeded ``torch.Generator``;
* ``"eigen"`` — the top eigenvector of the input Hessian (exact for piecewise-linear nets, else batched Lanczos).

Each direction is then normalised per sample (``"linf"``: ‖d‖∞ = 1, so a radius is in the pixel units of an
L∞ eps; ``"unit"``: ‖d‖₂ = 1). In 2D the second direction is first made orthogonal to the first (per-sample
Gram–Schmidt).

The (sample, a, b) grid is evaluated in rectangular blocks sized to a memory budget (``bytes_per_point``,
``chunk_size``, ``blocks``): each block's inputs are built by broadcasting from its own index ranges, so the
full (B·A·Bt, C, H, W) tensor never exists, and the forward passes run under ``torch.inference_mode()``.

Example:
    >>> import torch
    >>> from landscape import create_model
    >>> from landscape.slices import grid, slice_1d, slice_2d
    >>> model = create_model("small_cnn")
    >>> x, y = torch.rand(2, 1, 8, 8), torch.tensor([3, 5])
    >>> df = slice_1d(model, x, y, "random", grid(0.1, 5))
    >>> list(df.columns)
    ['sample', 'direction', 'a', 'loss', 'correct', 'margin']
    >>> df2 = slice_2d(model, x, y, "adversarial", "random", grid(0.1, 3), grid(0.1, 3))
    >>> len(df2)
    18
"""
from __future__ import annotations

import difflib
import math
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .chunking import (ACTIVATION_FACTOR, CPU_MAX_BATCH, CPU_MAX_BYTES, CUDA_MAX_BATCH, INPUT_COPIES,  # noqa: F401
                       _probe, _tensor_bytes, blocks, bytes_per_point, chunk_size, default_max_batch,
                       default_max_bytes)
from .attacks import AttackSettings, attack_settings, run_attack
from .datasets import as_tensors
from ._base import (check_labels_fit, check_model_batch, correct_predictions, eval_mode, logit_margin, model_device,
                    per_sample_loss)

__all__ = [
    "DIRECTIONS", "NORMALIZATIONS", "RANDOM_KINDS", "SliceGrid",
    "grid", "normalize_direction", "orthogonalize", "random_direction", "gradient_direction",
    "adversarial_direction", "eigen_direction", "compute_direction",
    "blocks", "bytes_per_point", "chunk_size", "default_max_batch", "default_max_bytes", "slice_1d", "slice_2d",
]

DIRECTIONS = ("adversarial", "gradient", "random", "eigen")
NORMALIZATIONS = ("unit", "linf")
RANDOM_KINDS = ("rademacher", "gaussian")

class SliceGrid(NamedTuple):
    """Raw slice values (``as_frame=False``); each has shape (B, A) in 1D or (B, A, Bt) in 2D."""

    loss: torch.Tensor
    correct: torch.Tensor
    margin: torch.Tensor


# --------------------------------------------------------------------------------------------------------
# validation helpers


def _choice(value: str, allowed: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {what} {value!r}{hint} (allowed: {', '.join(allowed)})")
    return value


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _coords(values, name: str) -> torch.Tensor:
    """Grid coordinates as a finite, non-empty 1-D float64 tensor."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    try:
        t = torch.as_tensor(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a 1-D sequence of numbers, got {type(values).__name__}") from None
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


def grid(radius: float, n: int) -> torch.Tensor:
    """``n`` evenly spaced coordinates from ``-radius`` to ``radius`` (float64), exactly symmetric; odd ``n``
    includes an exact 0 (the clean input).

    Args:
        radius: half-width of the grid, a finite number > 0.
        n: number of points, >= 1 (``n=1`` gives ``[0.]``).

    Returns:
        (n,) float64 tensor.
    """
    n = _positive_int(n, "n")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)):
        raise TypeError(f"radius must be a number, got {type(radius).__name__}")
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a finite number > 0, got {radius}")
    if n == 1:
        return torch.zeros(1, dtype=torch.float64)
    steps = torch.arange(n, dtype=torch.float64) * 2 - (n - 1)  # exact integers, symmetric about 0
    return radius * steps / (n - 1)


# --------------------------------------------------------------------------------------------------------
# directions


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) broadcasting against ``like`` (B, ...)."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def normalize_direction(d: torch.Tensor, normalization: str = "linf") -> torch.Tensor:
    """Scale each sample's direction to unit size.

    Args:
        d: (B, ...) directions.
        normalization: ``"linf"`` (‖d_i‖∞ = 1, radius in L∞ pixel units) or ``"unit"`` (‖d_i‖₂ = 1).

    Returns:
        (B, ...) tensor; a sample whose direction is all zeros stays zero.
    """
    _choice(normalization, NORMALIZATIONS, "normalization")
    flat = d.flatten(1)
    size = flat.abs().amax(dim=1) if normalization == "linf" else flat.norm(dim=1)
    scale = torch.where(size > 0, 1.0 / torch.where(size > 0, size, torch.ones_like(size)), torch.zeros_like(size))
    return d * _per_sample(scale, d)


def orthogonalize(d2: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    """Per-sample Gram–Schmidt: remove from ``d2`` its component along ``d1``.

    Args:
        d2: (B, ...) directions to correct.
        d1: (B, ...) reference directions (a zero ``d1_i`` leaves ``d2_i`` unchanged).

    Returns:
        (B, ...) ``d2_i - (<d2_i, d1_i> / <d1_i, d1_i>) d1_i``, orthogonal to ``d1`` sample by sample.
    """
    if d2.shape != d1.shape:
        raise ValueError(f"directions must have the same shape, got {tuple(d2.shape)} and {tuple(d1.shape)}")
    f1, f2 = d1.flatten(1), d2.flatten(1)
    dot11 = (f1 * f1).sum(dim=1)
    coef = torch.where(dot11 > 0, (f2 * f1).sum(dim=1) / torch.where(dot11 > 0, dot11, torch.ones_like(dot11)),
                       torch.zeros_like(dot11))
    return d2 - _per_sample(coef, d1) * d1


def random_direction(x: torch.Tensor, *, kind: str = "rademacher", seed: int = 0) -> torch.Tensor:
    """Random direction per sample from a CPU ``torch.Generator`` seeded with ``seed`` (device independent).

    Args:
        x: (B, ...) batch giving shape, dtype and device.
        kind: ``"rademacher"`` (entries ±1) or ``"gaussian"`` (standard normal).
        seed: integer seed.

    Returns:
        (B, ...) tensor on ``x``'s device with ``x``'s dtype.
    """
    _choice(kind, RANDOM_KINDS, "random kind")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    if kind == "rademacher":
        d = torch.randint(0, 2, x.shape, generator=gen).to(x.dtype) * 2 - 1
    else:
        d = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype)
    return d.to(x.device)


def gradient_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, ...) input gradient ∇ₓ CE(f(x), y) of each sample (``measures.gradients.input_gradient``)."""
    from landscape.measures.gradients import input_gradient

    return input_gradient(model, x, y)


def adversarial_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None,
                          attack: str | AttackSettings = "pgd", steps: int = 10, step_size: float | None = None,
                          norm: str = "linf", seed: int = 0) -> torch.Tensor:
    """(B, ...) adversarial perturbation ``x_adv - x`` found by PGD (or FGSM) within the eps ball.

    Args:
        model: classifier returning (B, K) logits (attacked in eval mode).
        x: (B, ...) inputs in [0,1]; y: (B,) labels.
        eps: attack radius in [0,1] pixel units (not needed when ``attack`` is an ``AttackSettings``).
        attack: ``"pgd"``, ``"fgsm"``, ``"official"`` (the official evaluation attack at ``eps``) or a whole
            :class:`~landscape.attacks.AttackSettings`.
        steps, step_size, norm, seed: passed to ``landscape.attacks.pgd`` (``norm`` also to FGSM).
    """
    if not isinstance(attack, AttackSettings):
        _choice(attack, ("pgd", "fgsm", "official"), "attack")
        if eps is None or not eps > 0:  # eps = 0 gives a zero direction: every slice would be flat
            raise ValueError(f"the adversarial direction needs eps > 0, got eps={eps}")
        attack = attack_settings(attack, eps=eps, steps=steps, step_size=step_size, norm=norm)
    if not attack.eps > 0:
        raise ValueError(f"the adversarial direction needs eps > 0, got eps={attack.eps}")
    x_adv, _ = run_attack(model, x, y, attack, seed=seed)
    return x_adv - x


def eigen_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int = 20, tol: float = 1e-6,
                    seed: int = 0) -> torch.Tensor:
    """(B, ...) top (largest-magnitude) eigenvector of each sample's input Hessian of the loss.

    From ``landscape.measures.curvature.top_eigenvalue``: exact from the logit Jacobian where the logits are
    piecewise linear, else the Ritz vector of batched Lanczos (at most ``iters`` Hessian-vector products per
    sample, stopping once the eigenvalue's estimated error is below ``tol`` relative); the sign of an
    eigenvector is arbitrary.
    """
    from landscape.measures.curvature import top_eigenvalue

    _, vectors = top_eigenvalue(model, x, y, iters=iters, tol=tol, seed=seed)
    return vectors


def compute_direction(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None,
                      attack: str | AttackSettings = "pgd", steps: int = 10, step_size: float | None = None,
                      norm: str = "linf", kind: str = "rademacher", iters: int = 20, tol: float = 1e-6,
                      seed: int = 0) -> torch.Tensor:
    """Direction by name (one of ``DIRECTIONS``), unnormalised, (B, ...) on ``x``'s device.

    ``eps``/``attack``/``steps``/``step_size``/``norm`` are used by ``"adversarial"`` (``eps`` required),
    ``kind`` by ``"random"``, ``iters``/``tol`` by ``"eigen"``, ``seed`` by all randomised ones.
    """
    _choice(name, DIRECTIONS, "direction")
    if name == "random":
        return random_direction(x, kind=kind, seed=seed)
    if name == "gradient":
        return gradient_direction(model, x, y)
    if name == "eigen":
        return eigen_direction(model, x, y, iters=iters, tol=tol, seed=seed)
    if eps is None and not isinstance(attack, AttackSettings):
        raise ValueError("direction 'adversarial' needs eps= (the attack radius)")
    return adversarial_direction(model, x, y, eps=eps, attack=attack, steps=steps, step_size=step_size,
                                 norm=norm, seed=seed)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dirs: list[torch.Tensor],
              coords: list[torch.Tensor], *, clip: bool, chunk: int, progress: bool,
              autocast: str | None = None) -> tuple[SliceGrid, int]:
    """Evaluate L(x_s + Σ_j c_j[i_j] · d_j[s]) for every sample s and grid index (i_1, ..., i_k).

    The (B, n_1, ..., n_k) index box is cut into rectangular ``blocks`` of at most ``chunk`` points; a block's
    inputs are built by broadcasting (x[s] + c_1[i_1]·d_1[s] + ... in this order) from its slices alone.

    Returns:
        (SliceGrid of (B, n_1, ..., n_k) CPU tensors, largest number of points in one forward pass).
    """
    from ._progress import tqdm  # quiet off a terminal

    k, rest = len(dirs), tuple(x.shape[1:])
    sizes = [c.numel() for c in coords]
    n = x.shape[0] * math.prod(sizes)
    coords_t = [c.to(device=x.device, dtype=x.dtype) for c in coords]
    y_flat = y.repeat_interleave(math.prod(sizes))  # labels in grid order, sliced per block
    ones = (1,) * len(rest)
    losses, margins, corrects, largest, lo = [], [], [], 0, 0
    with eval_mode(model), torch.inference_mode(), \
            tqdm(total=n, unit="pt", desc="slice", disable=not progress, leave=False) as bar:
        for block in blocks([x.shape[0], *sizes], chunk):
            ss = block[0]
            ns = len(range(*ss.indices(x.shape[0])))
            pts = x[ss].view(ns, *(1,) * k, *rest)
            for j, (d, c, sl) in enumerate(zip(dirs, coords_t, block[1:])):
                cj = c[sl]
                step = cj.view(*(1,) * (j + 1), cj.numel(), *(1,) * (k - 1 - j), *ones)
                pts = pts + step * d[ss].view(ns, *(1,) * k, *rest)
            pts = pts.reshape(-1, *rest)
            if clip:
                pts.clamp_(0.0, 1.0)
            hi = lo + pts.shape[0]
            if autocast is None:
                logits = model(pts)
            else:  # loss values only: the logits go back to float32 before the loss
                with torch.autocast(device_type=pts.device.type, dtype=AUTOCAST[autocast]):
                    logits = model(pts)
                logits = logits.float()
            ys = y_flat[lo:hi]
            margin = logit_margin(logits, ys)  # NaN wherever a logit is NaN
            losses.append(per_sample_loss(logits, ys))
            margins.append(margin)
            corrects.append(correct_predictions(logits, ys))
            largest = max(largest, hi - lo)
            bar.update(hi - lo)
            lo = hi
    shape = (x.shape[0], *sizes)
    out = [torch.cat(parts).reshape(shape).cpu() for parts in (losses, corrects, margins)]
    return SliceGrid(*out), largest


#: Reduced precisions for slice loss values (never for curvature): on an H200 both kept every loss within
#: 1e-2 relative / 1e-3 absolute of float32 and ran 1.3-1.8x faster (benchmarks/results/slices_h200.csv).
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(value: str | None) -> str | None:
    return None if value is None else _choice(value, tuple(AUTOCAST), "autocast")


def _direction(direction, name_slot: str, model, x, y, **kw) -> tuple[torch.Tensor, str]:
    """A direction given by name or tensor -> ((B, ...) tensor on x's device, label for the frame)."""
    if isinstance(direction, str):
        return compute_direction(direction, model, x, y, **kw).to(device=x.device, dtype=x.dtype), direction
    if not isinstance(direction, torch.Tensor):
        raise TypeError(f"{name_slot} must be a direction name ({', '.join(DIRECTIONS)}) or a tensor, "
                        f"got {type(direction).__name__}")
    d = direction.to(device=x.device, dtype=x.dtype)
    if d.shape == x.shape[1:]:
        d = d.unsqueeze(0).expand_as(x)
    if d.shape != x.shape:
        raise ValueError(f"{name_slot} has shape {tuple(direction.shape)}; expected {tuple(x.shape)} "
                         f"or {tuple(x.shape[1:])}")
    if not torch.isfinite(d).all():
        raise ValueError(f"{name_slot} contains NaN/Inf values")
    return d.contiguous(), "custom"


def _prepare(model, x, y, max_batch, max_bytes, normalization, clip):
    x, y = check_model_batch(model, x, y)
    device = model_device(model)
    x, y = x.to(device).contiguous(), y.to(device)
    if max_batch is not None:
        _positive_int(max_batch, "max_batch")
    if max_bytes is not None:
        _positive_int(max_bytes, "max_bytes")
    if normalization is not None:
        _choice(normalization, NORMALIZATIONS, "normalization")
    if not isinstance(clip, bool):
        raise TypeError(f"clip must be a bool, got {type(clip).__name__}")
    return x, y, device


def _plan(model, x, y, n_points, max_batch, max_bytes, device) -> tuple[int, int]:
    point = bytes_per_point(model, x)
    with eval_mode(model), torch.inference_mode():
        check_labels_fit(model(x[:1]), y)
    return point, chunk_size(n_points, point, max_batch=max_batch, max_bytes=max_bytes, device=device)


def _label(name: str, n: int) -> pd.Categorical:
    """A constant text column as a one-category Categorical (cheap for millions of rows)."""
    return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[name])


def _radius(*coords: torch.Tensor) -> float:
    return float(max(c.abs().max() for c in coords))


def slice_1d(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, direction: str | torch.Tensor, alphas, *,
             normalization: str | None = "linf", clip: bool = False, eps: float | None = None,
             attack: str | AttackSettings = "pgd", steps: int = 10, step_size: float | None = None,
             norm: str = "linf",
             kind: str = "rademacher", iters: int = 20, seed: int = 0, max_batch: int | None = None,
             max_bytes: int | None = None, progress: bool = False, as_frame: bool = True,
             autocast: str | None = None):
    """Loss along one direction per sample: L(x_s + a·d_s) for every a in ``alphas``.

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode (its mode is restored).
        x: (B, ...) inputs in [0,1] (moved to the model's device), or a ``torch.utils.data.Dataset`` of
            (image, label) pairs (decoded whole: slice a few samples).
        y: (B,) integer labels; None for a Dataset.
        direction: a name in ``DIRECTIONS`` (computed here) or a (B, ...) / (...) tensor.
        alphas: (A,) coordinates along the direction, e.g. ``grid(0.1, 51)``.
        normalization: ``"linf"`` (default; ‖d‖∞ = 1, so ``a`` is in L∞ pixel units), ``"unit"``
            (‖d‖₂ = 1) or None (use the direction as computed/given).
        clip: clamp each evaluated point to [0,1]. Default False, so the geometry is exact.
        eps: attack radius for ``"adversarial"``; default ``max|alphas|``.
        attack, steps, step_size, norm: the attack for ``"adversarial"`` (see ``adversarial_direction``).
        kind: ``"rademacher"`` or ``"gaussian"`` for ``"random"``.
        iters: most Lanczos steps for ``"eigen"``.
        seed: seed of the random direction, PGD start and Lanczos start vectors.
        max_batch: most grid points per forward pass; default ``default_max_batch`` (4096 on CPU, 65536 on
            CUDA).
        max_bytes: memory budget per chunk (see ``bytes_per_point``); default ``default_max_bytes``.
        progress: show a tqdm progress bar.
        as_frame: return a DataFrame (default) or a ``SliceGrid`` of (B, A) tensors.
        autocast: ``None`` (float32, default), ``"bf16"`` or ``"fp16"``: forward passes under
            ``torch.autocast`` for loss values only (a GPU option: 1.3-1.8x faster on an H200 with every loss
            within 1e-2 relative / 1e-3 absolute; see docs/measures.md). Directions are always float32.

    Returns:
        DataFrame with one row per (sample, a), ordered by sample then a: ``sample`` (index into the batch),
        ``direction`` (its name, ``"custom"`` for a tensor; categorical), ``a``, ``loss`` (cross-entropy, in the
        model's dtype), ``correct`` (bool, argmax == label and no NaN logit), ``margin`` (true-class logit
        minus the largest other); ``df.attrs`` holds ``clip``, ``normalization``, ``radius`` (max |a|),
        ``chunk_size`` (most points in one forward pass), ``eps`` (None unless adversarial), ``seed``.
        With ``as_frame=False``: ``SliceGrid(loss, correct, margin)``.

    Raises:
        ValueError: unknown direction/normalization, bad shapes, empty or non-finite alphas, bad labels.
        TypeError: wrong argument types.
    """
    x, y = as_tensors(x, y)
    _autocast(autocast)
    x, y, device = _prepare(model, x, y, max_batch, max_bytes, normalization, clip)
    alphas = _coords(alphas, "alphas")
    radius = _radius(alphas)
    eps = radius if eps is None else eps
    kw = dict(eps=eps, attack=attack, steps=steps, step_size=step_size, norm=norm, kind=kind, iters=iters, seed=seed)
    d, name = _direction(direction, "direction", model, x, y, **kw)
    if normalization is not None:
        d = normalize_direction(d, normalization)
    _, chunk = _plan(model, x, y, x.shape[0] * alphas.numel(), max_batch, max_bytes, device)
    out, chunk = _evaluate(model, x, y, [d], [alphas], clip=clip, chunk=chunk, progress=progress,
                           autocast=_autocast(autocast))
    if not as_frame:
        return out
    B, A = out.loss.shape
    df = pd.DataFrame({
        "sample": np.repeat(np.arange(B), A),
        "direction": _label(name, B * A),
        "a": np.tile(alphas.numpy(), B),
        "loss": out.loss.reshape(-1).numpy(),
        "correct": out.correct.reshape(-1).numpy(),
        "margin": out.margin.reshape(-1).numpy(),
    })
    df.attrs.update(clip=clip, normalization=normalization, radius=radius, chunk_size=chunk,
                    eps=float(eps) if name == "adversarial" else None, seed=seed)
    return df


def slice_2d(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, d1: str | torch.Tensor, d2: str | torch.Tensor,
             alphas, betas, *, orthogonal: bool = True, normalization: str | None = "linf", clip: bool = False,
             eps: float | None = None, attack: str | AttackSettings = "pgd", steps: int = 10,
             step_size: float | None = None,
             norm: str = "linf", kind: str = "rademacher", iters: int = 20, seed: int = 0,
             max_batch: int | None = None, max_bytes: int | None = None, progress: bool = False,
             as_frame: bool = True, autocast: str | None = None):
    """Loss on a plane per sample: L(x_s + a·d1_s + b·d2_s) for every (a, b) in ``alphas × betas``.

    Args:
        d1, d2: direction names (``DIRECTIONS``) or (B, ...) / (...) tensors. A random ``d2`` uses
            ``seed + 1`` so that two random directions differ; two identical non-random names are refused.
        alphas: (A,) coordinates along d1; betas: (Bt,) coordinates along d2.
        orthogonal: make d2 orthogonal to d1 per sample (Gram–Schmidt) before normalising. Default True.
        eps: attack radius for ``"adversarial"``; default ``max(|alphas|, |betas|)``.
        Other arguments as in ``slice_1d``.

    Returns:
        DataFrame with one row per (sample, a, b): ``sample``, ``direction1``, ``direction2``, ``a``, ``b``,
        ``loss``, ``correct``, ``margin``; ``df.attrs`` as in ``slice_1d`` plus ``orthogonal``.
        With ``as_frame=False``: ``SliceGrid`` of (B, A, Bt) tensors.
    """
    x, y = as_tensors(x, y)
    _autocast(autocast)
    x, y, device = _prepare(model, x, y, max_batch, max_bytes, normalization, clip)
    alphas, betas = _coords(alphas, "alphas"), _coords(betas, "betas")
    if not isinstance(orthogonal, bool):
        raise TypeError(f"orthogonal must be a bool, got {type(orthogonal).__name__}")
    if isinstance(d1, str) and isinstance(d2, str) and d1 == d2 and d1 != "random":
        raise ValueError(f"d1 and d2 are both {d1!r}; pick two different directions (e.g. {d1!r} and 'random')")
    radius = _radius(alphas, betas)
    eps = radius if eps is None else eps
    kw = dict(eps=eps, attack=attack, steps=steps, step_size=step_size, norm=norm, kind=kind, iters=iters)
    t1, name1 = _direction(d1, "d1", model, x, y, seed=seed, **kw)
    seed2 = seed + 1 if isinstance(d2, str) and d2 == "random" else seed
    t2, name2 = _direction(d2, "d2", model, x, y, seed=seed2, **kw)
    if orthogonal:
        t2 = orthogonalize(t2, t1)
    if normalization is not None:
        t1, t2 = normalize_direction(t1, normalization), normalize_direction(t2, normalization)
    _, chunk = _plan(model, x, y, x.shape[0] * alphas.numel() * betas.numel(), max_batch, max_bytes, device)
    out, chunk = _evaluate(model, x, y, [t1, t2], [alphas, betas], clip=clip, chunk=chunk, progress=progress,
                           autocast=_autocast(autocast))
    if not as_frame:
        return out
    B, A, Bt = out.loss.shape
    df = pd.DataFrame({
        "sample": np.repeat(np.arange(B), A * Bt),
        "direction1": _label(name1, B * A * Bt),
        "direction2": _label(name2, B * A * Bt),
        "a": np.tile(np.repeat(alphas.numpy(), Bt), B),
        "b": np.tile(betas.numpy(), B * A),
        "loss": out.loss.reshape(-1).numpy(),
        "correct": out.correct.reshape(-1).numpy(),
        "margin": out.margin.reshape(-1).numpy(),
    })
    uses_eps = "adversarial" in (name1, name2)
    df.attrs.update(clip=clip, normalization=normalization, radius=radius, chunk_size=chunk, orthogonal=orthogonal,
                    eps=float(eps) if uses_eps else None, seed=seed)
    return df
