"""Weight-space slices: the probe set's mean loss and accuracy at ``w + a·d (+ b·e)``, clean or robust.
See :mod:`landscape.weight_slices`."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .._base import check_labels_fit, correct_predictions, per_sample_loss
from ..attacks import AttackSettings, run_attack
from .directions import (LOSSES, Direction, _adversarial, _batch, _choice, _coords, eigen_directions, random_direction,
                         restored)

__all__ = ["weight_slice_1d", "weight_slice_2d"]


def _evaluate(model, x, y, batch_size: int) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the batch, in batches, float64 sums."""
    total, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size])
            check_labels_fit(logits, y[i:i + batch_size])
            total += float(per_sample_loss(logits, y[i:i + batch_size]).double().sum())
            correct += int(correct_predictions(logits, y[i:i + batch_size]).sum())
    return total / len(x), correct / len(x)


def _resolve(direction, slot: str, model, x, y, *, seed, norm, ignore, loss, attack, x_adv, eigen_index=0,
             eigen=None) -> tuple[Direction, str]:
    if isinstance(direction, str):
        _choice(direction, ("random", "eigen"), slot)
        if direction == "random":
            return random_direction(model, seed=seed, norm=norm, ignore=ignore), "random"
        vecs = eigen if eigen is not None else eigen_directions(
            model, x, y, k=eigen_index + 1, loss="clean" if loss == "clean" else "robust", attack=attack,
            x_adv=x_adv, seed=seed, ignore=ignore)[1]
        return vecs[eigen_index], "eigen"
    if not isinstance(direction, Mapping):
        raise TypeError(f"{slot} must be 'random', 'eigen' or a {{name: tensor}} dict, got {type(direction).__name__}")
    params = dict(model.named_parameters())
    unknown = sorted(set(direction) - set(params))
    if unknown:
        raise ValueError(f"{slot} names parameters the model does not have: {unknown[:3]}")
    out = {}
    for n, p in params.items():
        d = direction.get(n)
        if d is None:
            continue
        d = torch.as_tensor(d).to(device=p.device, dtype=p.dtype)
        if d.shape != p.shape:
            raise ValueError(f"{slot}[{n!r}] has shape {tuple(d.shape)}; the parameter has {tuple(p.shape)}")
        if not torch.isfinite(d).all():
            raise ValueError(f"{slot}[{n!r}] contains NaN/Inf values")
        out[n] = d
    return out, "custom"


def _grid(model, x, y, dirs: list[Direction], axes: list[list[float]], *, loss, attack, x_adv, reattack, seed,
          batch_size, progress) -> list[tuple]:
    """Rows (coords..., kind, loss, acc) for every grid point (C order over ``axes``); the model inside
    ``restored`` already, at its centre weights, ``x_adv`` attacked there (when a robust loss is asked for)."""
    from .._progress import tqdm  # quiet off a terminal

    kinds = ["clean", "robust"] if loss == "both" else [loss]
    params = dict(model.named_parameters())
    moved = [n for n in params if any(n in d and bool(d[n].ne(0).any()) for d in dirs)]
    centre = {n: params[n].detach().clone() for n in moved}
    rows = []
    points = list(np.ndindex(*[len(a) for a in axes]))
    for idx in tqdm(points, desc="weight slice", disable=not progress, leave=False):
        coords = [axes[j][i] for j, i in enumerate(idx)]
        with torch.no_grad():
            for n in moved:
                w = centre[n]
                for d, c in zip(dirs, coords):
                    if n in d:
                        w = w + d[n] * c
                params[n].copy_(w)
        for kind in kinds:
            if kind == "clean":
                xs = x
            elif reattack:
                xs = run_attack(model, x, y, attack, seed=seed)[0].detach()
            else:
                xs = x_adv
            rows.append((*coords, kind, *_evaluate(model, xs, y, batch_size)))
    return rows


def _check_common(loss, batch_size, reattack, attack, x_adv):
    """Argument checks before any work (an eigen direction or an attack can take a while)."""
    _choice(loss, LOSSES, "loss")
    if attack is not None and not isinstance(attack, AttackSettings):
        raise TypeError(f"attack must be an AttackSettings or None, got {type(attack).__name__}")
    if loss != "clean" and attack is None and (x_adv is None or reattack):
        raise TypeError("the robust loss needs attack=AttackSettings(...)" + ("" if reattack else " or x_adv="))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(reattack, bool):
        raise TypeError(f"reattack must be a bool, got {type(reattack).__name__}")


def _attrs(df, **kw):
    df.attrs.update({k: (v.to_dict() if isinstance(v, AttackSettings) else v) for k, v in kw.items()})
    return df


def weight_slice_1d(model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction, alphas, *,
                    loss: str = "clean", attack: AttackSettings | None = None, x_adv: torch.Tensor | None = None,
                    reattack: bool = False, seed: int = 0, norm: str | None = "filter",
                    ignore: str | None = "biasbn", batch_size: int = 256, progress: bool = False) -> pd.DataFrame:
    """Mean loss and accuracy of the probe set ``(x, y)`` at ``w + a·d`` for every ``a`` in ``alphas``.

    Args:
        model: classifier returning (B, K) logits; evaluated in eval mode (BN uses its running statistics).
        x: (N, ...) probe inputs in [0,1] (or a Dataset, decoded whole); y: (N,) integer labels (None for a
            Dataset).
        direction: ``"random"`` (filter-normalised Gaussian, seeded), ``"eigen"`` (top weight-Hessian
            eigenvector of the ``loss``; unit norm) or a ``{name: tensor}`` dict used as given.
        alphas: (A,) step sizes; with a filter-normalised direction ``a = 1`` moves each filter by its own norm.
        loss: ``"clean"``, ``"robust"`` or ``"both"`` (one row per kind).
        attack: the attack for the robust loss (not needed when ``x_adv`` is given and ``reattack=False``).
        x_adv: (N, ...) adversarial inputs at the centre; default: attacked once with ``attack``.
        reattack: attack afresh at every grid point (``attack`` required) instead of a fixed ``x_adv``.
        seed: seeds the direction, the attack's random start and Lanczos.
        norm, ignore: for ``"random"`` directions (see :func:`normalize_direction`); ``ignore`` also for
            ``"eigen"``.
        batch_size: samples per forward pass.
        progress: show a progress bar.

    Returns:
        DataFrame, one row per (alpha, kind) in that order: ``direction`` (``random``/``eigen``/``custom``),
        ``alpha``, ``kind`` (``clean``/``robust``), ``loss`` (mean cross-entropy, nats), ``acc`` (fraction
        correct); ``attrs``: ``norm``, ``ignore``, ``seed``, ``n`` (probe size), ``reattack``, ``attack``.

    Raises:
        ValueError/TypeError: bad names, shapes, coordinates, or a robust loss without attack/x_adv.
    """
    _check_common(loss, batch_size, reattack, attack, x_adv)
    x, y = _batch(model, x, y)
    alphas = _coords(alphas, "alphas")
    with restored(model):
        if loss != "clean":  # attacked once at the centre: for an eigen direction and the fixed robust loss
            x_adv = _adversarial(model, x, y, attack, x_adv, seed)
        d, name = _resolve(direction, "direction", model, x, y, seed=seed, norm=norm, ignore=ignore, loss=loss,
                           attack=attack, x_adv=x_adv)
        rows = _grid(model, x, y, [d], [alphas], loss=loss, attack=attack, x_adv=x_adv, reattack=reattack,
                     seed=seed, batch_size=batch_size, progress=progress)
    df = pd.DataFrame(rows, columns=["alpha", "kind", "loss", "acc"])
    df.insert(0, "direction", name)
    return _attrs(df, norm=norm, ignore=ignore, seed=seed, n=len(x), reattack=reattack, attack=attack)


def weight_slice_2d(model: nn.Module, x: torch.Tensor, y: torch.Tensor, d1, d2, alphas, betas, *,
                    loss: str = "clean", attack: AttackSettings | None = None, x_adv: torch.Tensor | None = None,
                    reattack: bool = False, seed: int = 0, norm: str | None = "filter",
                    ignore: str | None = "biasbn", batch_size: int = 256, progress: bool = False) -> pd.DataFrame:
    """Mean loss and accuracy at ``w + a·d1 + b·d2`` for every ``(a, b)`` in ``alphas × betas``.

    ``d1``/``d2``: as ``direction`` in :func:`weight_slice_1d`; a random ``d2`` uses ``seed + 1`` (two
    independent Gaussian directions are nearly orthogonal in high dimension, as in Li et al.; not
    orthogonalised), ``"eigen"`` twice gives the top two eigenvectors. Other arguments as in
    :func:`weight_slice_1d`.

    Returns:
        DataFrame, one row per (alpha, beta, kind) in C order: ``direction1``, ``direction2``, ``alpha``,
        ``beta``, ``kind``, ``loss``, ``acc``; ``attrs`` as in :func:`weight_slice_1d`.
    """
    _check_common(loss, batch_size, reattack, attack, x_adv)
    x, y = _batch(model, x, y)
    alphas, betas = _coords(alphas, "alphas"), _coords(betas, "betas")
    with restored(model):
        if loss != "clean":  # attacked once at the centre: for eigen directions and the fixed robust loss
            x_adv = _adversarial(model, x, y, attack, x_adv, seed)
        common = dict(norm=norm, ignore=ignore, loss=loss, attack=attack, x_adv=x_adv)
        eigen = None
        if isinstance(d1, str) and isinstance(d2, str) and d1 == d2 == "eigen":
            eigen = eigen_directions(model, x, y, k=2, loss="clean" if loss == "clean" else "robust",
                                     attack=attack, x_adv=x_adv, seed=seed, ignore=ignore)[1]
        t1, n1 = _resolve(d1, "d1", model, x, y, seed=seed, eigen=eigen, **common)
        seed2 = seed + 1 if isinstance(d2, str) and d2 == "random" else seed
        t2, n2 = _resolve(d2, "d2", model, x, y, seed=seed2, eigen=eigen, eigen_index=1 if eigen else 0, **common)
        rows = _grid(model, x, y, [t1, t2], [alphas, betas], loss=loss, attack=attack, x_adv=x_adv,
                     reattack=reattack, seed=seed, batch_size=batch_size, progress=progress)
    df = pd.DataFrame(rows, columns=["alpha", "beta", "kind", "loss", "acc"])
    df.insert(0, "direction2", n2)
    df.insert(0, "direction1", n1)
    return _attrs(df, norm=norm, ignore=ignore, seed=seed, n=len(x), reattack=reattack, attack=attack)
