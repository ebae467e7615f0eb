"""Weight-space directions: filter normalisation (Li et al. 2018), random and Hessian-eigen directions.
See :mod:`landscape.weight_slices`. Every function that moves weights runs under ``restored``
(:func:`landscape.measures.weight_hessian.preserved`, the one guard of the weight-space measures)."""
from __future__ import annotations

import difflib
import math
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .._base import check_batch, model_device, model_dtype
from ..attacks import AttackSettings, run_attack
from ..datasets import as_tensors
from ..measures.weight_hessian import preserved as restored

__all__ = ["IGNORES", "LOSSES", "NORMS", "Direction", "eigen_directions", "normalize_direction", "perturbed",
           "random_direction"]

Direction = dict  # {parameter name: tensor shaped like the parameter}
IGNORES = ("biasbn", None)
NORMS = ("filter", "unit", None)
LOSSES = ("clean", "robust", "both")


def _choice(value, allowed: Sequence, what: str):
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {what} {value!r}{hint} (allowed: {', '.join(map(repr, allowed))})")
    return value


def _coords(values, name: str) -> list[float]:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be a non-empty 1-D sequence of finite numbers, got {values!r}")
    return arr.tolist()


# --------------------------------------------------------------------------------------------------------
# checks


def perturbed(model: nn.Module, ignore: str | None = "biasbn") -> list[str]:
    """Names of the parameters a direction moves: all, or (``ignore="biasbn"``) those with ≥ 2 dimensions."""
    _choice(ignore, IGNORES, "ignore")
    return [n for n, p in model.named_parameters() if ignore is None or p.dim() > 1]


def _batch(model, x, y):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x, y = as_tensors(x, y)  # a Dataset is decoded whole: a probe set is small
    if y is None:
        raise TypeError("labels y are required")
    x, y = check_batch(x, y, dtype=model_dtype(model))
    device = model_device(model)
    return x.to(device).contiguous(), y.to(device)


def _adversarial(model, x, y, attack, x_adv, seed):
    if x_adv is not None:
        x_adv, _ = check_batch(x_adv, None, name="x_adv", dtype=x.dtype)
        if x_adv.shape != x.shape:
            raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
        return x_adv.to(x.device)
    if not isinstance(attack, AttackSettings):
        raise TypeError("the robust loss needs attack=AttackSettings(...) or x_adv=")
    return run_attack(model, x, y, attack, seed=seed)[0].detach()


# --------------------------------------------------------------------------------------------------------
# directions


def normalize_direction(direction: Mapping[str, torch.Tensor], model: nn.Module, *, norm: str | None = "filter",
                        ignore: str | None = "biasbn") -> Direction:
    """Rescale a direction against the model's weights (a new dict; the input is not modified).

    Args:
        direction: ``{name: tensor}`` for every parameter name (missing names count as zero).
        model: gives the weights ``w`` (its current parameters).
        norm: ``"filter"`` (each filter ``d_f`` of a ≥2-D parameter scaled to ``‖w_f‖``; a filter along the
            first dimension), ``"unit"`` (the whole direction scaled to ‖d‖₂ = 1) or None (unchanged).
        ignore: ``"biasbn"`` (default): ≤1-D parameters (biases, BN) get a zero direction; None: their
            direction is kept as given (not filter-normalised; :func:`random_direction` sets it to ``w``),
            and scaled with the rest by ``norm="unit"``.

    Returns:
        ``{name: tensor}`` on each parameter's device and dtype, for every parameter.
    """
    _choice(norm, NORMS, "norm")
    _choice(ignore, IGNORES, "ignore")
    out = {}
    for name, p in model.named_parameters():
        w = p.detach()
        d = direction.get(name)
        d = torch.zeros_like(w) if d is None else d.detach().to(device=w.device, dtype=w.dtype)
        if d.shape != w.shape:
            raise ValueError(f"direction {name!r} has shape {tuple(d.shape)}; the parameter has {tuple(w.shape)}")
        if w.dim() <= 1:
            d = torch.zeros_like(w) if ignore == "biasbn" else d
        elif norm == "filter":
            dn = d.flatten(1).norm(dim=1)
            wn = w.flatten(1).norm(dim=1)
            scale = torch.where(dn > 0, wn / torch.where(dn > 0, dn, torch.ones_like(dn)), torch.zeros_like(dn))
            d = d * scale.view(-1, *([1] * (w.dim() - 1)))
        out[name] = d
    if norm == "unit":
        total = math.sqrt(sum(float(d.double().pow(2).sum()) for d in out.values()))
        if total > 0:
            out = {n: d / total for n, d in out.items()}
    return out


def random_direction(model: nn.Module, *, seed: int = 0, norm: str | None = "filter",
                     ignore: str | None = "biasbn") -> Direction:
    """A Gaussian direction per parameter (CPU generator seeded with ``seed``: device independent, the global
    RNG untouched), normalised by :func:`normalize_direction` (default: filter-normalised, BN/bias zero)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    raw = {n: torch.randn(p.shape, generator=gen, dtype=torch.float32).to(device=p.device, dtype=p.dtype)
           for n, p in model.named_parameters()}
    if ignore is None:  # the reference implementation's choice for biases and BN: d = w
        raw.update({n: p.detach().clone() for n, p in model.named_parameters() if p.dim() <= 1})
    return normalize_direction(raw, model, norm=norm, ignore=ignore)


def _unflat(vec: torch.Tensor, model: nn.Module, names: list[str]) -> Direction:
    out, i, keep = {}, 0, set(names)
    for n, p in model.named_parameters():
        if n in keep:
            out[n] = vec[i:i + p.numel()].view_as(p).to(device=p.device, dtype=p.dtype)
            i += p.numel()
        else:
            out[n] = torch.zeros_like(p.detach())
    return out


def eigen_directions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, k: int = 1, loss: str = "clean",
                     attack: AttackSettings | None = None, x_adv: torch.Tensor | None = None, iters: int = 30,
                     tol: float = 1e-6, seed: int = 0, ignore: str | None = "biasbn", norm: str | None = "unit",
                     batch_size: int = 256) -> tuple[np.ndarray, list[Direction]]:
    """Top-``k`` (largest algebraic) eigenpairs of the weight Hessian of the probe set's mean loss.

    From :func:`landscape.measures.weight_hessian.top_eigenvalues`: Lanczos with full reorthogonalisation on
    exact Hessian-vector products (accumulated over batches of ``batch_size``), with the Hessian restricted to
    the parameters :func:`perturbed` names (those a slice moves); at most ``iters`` products, stopping once
    every top-``k`` Ritz residual ‖Hu − θu‖ is below ``tol``·|θ|.

    Args:
        loss: ``"clean"`` or ``"robust"`` (at ``x_adv``, given or attacked once with ``attack``).
        seed: seeds the Lanczos start vector and the attack (own generators).
        norm: normalisation of each eigenvector (:func:`normalize_direction`; default ``"unit"``: ‖d‖₂ = 1).

    Returns:
        ``(eigenvalues (k,) float64 numpy, descending, [direction, ...])``; an eigenvector's sign is arbitrary.
    """
    from ..measures.weight_hessian import WeightHessian, top_eigenvalues

    _choice(loss, ("clean", "robust"), "loss")
    x, y = _batch(model, x, y)
    names = perturbed(model, ignore)
    if not names:
        raise ValueError("the model has no parameter with 2 or more dimensions to perturb; pass ignore=None")
    with restored(model):
        if loss == "robust":
            x = _adversarial(model, x, y, attack, x_adv, seed)
        batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        op = WeightHessian(model, batches, layers=",".join(names))
        if op.names != names:  # a name that reads as a glob pattern
            raise ValueError(f"cannot select the parameters {names} by name")
        top = top_eigenvalues(op, k, max_steps=iters, tol=tol, seed=seed)
    dirs = [normalize_direction(_unflat(v.double().cpu(), model, names), model, norm=norm, ignore=ignore)
            for v in top.vectors]
    return top.values.double().cpu().numpy(), dirs
