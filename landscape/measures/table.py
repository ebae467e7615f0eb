"""``measure()``: attack a batch and gather every per-sample landscape measure into one DataFrame.

Columns (one row per sample; see ``docs/internals.md``):

| column | meaning |
|---|---|
| ``sample`` | index into the given batch |
| ``label`` | true class |
| ``loss_clean``, ``loss_adv`` | cross-entropy at x and at x_adv |
| ``correct_clean``, ``correct_adv`` | bool |
| ``grad_l1``, ``grad_l2``, ``grad_linf`` | norms of ∇ₓ CE at the clean point (measure ``grad``) |
| ``curv_adv`` | dᵀH_x d / ‖d‖², d = x_adv − x (0 where d = 0) |
| ``curv_rand`` | same along a seeded Rademacher direction |
| ``eig_top`` | largest-magnitude eigenvalue of H_x (batched Lanczos, at most ``eig_iters`` steps) |
| ``hs``, ``hs_adv`` | the paper's HS: mean \\|top-20 eigenvalue\\| of the batch-mean loss's input Hessian at x / at x_adv, |
| | one value per batch, repeated on each row of the batch (so a mean over rows is the official mean over |
| | batches weighted by batch size) |
| ``taylor_gap`` | L(x+δ) − L(x) − ∇L(x)ᵀδ with δ = x_adv − x |
| ``logit_var`` | sum of the top 10 % (at least one) of \\|f(x_adv) − f(x)\\| entries of that sample |

``df.attrs`` records the settings (``eps``, ``attack``, ``steps``, ``step_size``, ``norm``, ``seed``,
``batch_size``, ``eig_iters``, ``dtype``, ``measures``), the Hessian-vector-product method actually used
(``hvp_method``), how many samples' power iterations did not converge (``eig_unconverged``) and the number
of NaN/Inf values in the table (``nonfinite``; a warning is raised when it is not 0).
"""
from __future__ import annotations

import copy
import warnings
from typing import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .._base import (check_model_batch, correct_predictions, derive_seed, eval_mode, frozen_params, model_device,
                     model_dtype, resolve_device)
from ..attacks import _check_eps, _check_norm, fgsm, pgd
from .curvature import (EIG_TOL, HS_ITERS, HS_K, HVP_METHODS, HessianOperator, _curvature_along, _info, _krylov,
                        _spectrum_from_ritz, _top_from_ritz)
from .gradients import NORMS, _check_model, _loss_logits_grad, _norms
from .taylor import _logit_variation, _taylor_gap

__all__ = ["MEASURES", "DEFAULT_MEASURES", "ATTACKS", "measure", "columns"]

MEASURES = ("grad", "curv_adv", "curv_rand", "eig_top", "taylor_gap", "logit_var", "hs", "hs_adv")
"""Selectable measure names; ``grad`` gives the three columns ``grad_l1``, ``grad_l2``, ``grad_linf``."""

DEFAULT_MEASURES = ("grad", "curv_adv", "curv_rand", "taylor_gap", "logit_var")
"""``measures=None``: the set whose cost stays within 2x the PGD-10 floor (``benchmarks/bench_units.py``).
``eig_top``, ``hs`` and ``hs_adv`` run a Lanczos solve each (about K + 1 Hessian-vector products, 10-15
input gradients) and are asked for by name."""

ATTACKS = ("pgd", "fgsm")
BASE_COLUMNS = ("sample", "label", "loss_clean", "loss_adv", "correct_clean", "correct_adv")
LOGIT_TOP = 0.1

# independent random streams per batch (see _seed)
_STREAM_ATTACK, _STREAM_RAND, _STREAM_EIG, _STREAM_HS_ADV = 0, 1, 2, 3
_AT_X = ("curv_adv", "curv_rand", "eig_top", "hs")  # measures using the Hessian at the clean point


def _check_measures(measures: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalise ``measures`` (None = the defaults, a comma-separated string or names) to a tuple in MEASURES
    order."""
    if measures is None:
        return DEFAULT_MEASURES
    names = [m.strip() for m in measures.split(",")] if isinstance(measures, str) else list(measures)
    unknown = [m for m in names if m not in MEASURES]
    if unknown:
        raise ValueError(f"unknown measure(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(MEASURES)})")
    return tuple(m for m in MEASURES if m in names)


def columns(measures: str | Iterable[str] | None = None) -> list[str]:
    """Column names of :func:`measure`'s table for the selected ``measures``, in order."""
    out = list(BASE_COLUMNS)
    for m in _check_measures(measures):
        out += list(NORMS) if m == "grad" else [m]
    return out


def _rademacher(shape: torch.Size, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 2, shape, generator=g, device=device).to(dtype) * 2 - 1


def _working_model(model: nn.Module, dtype: torch.dtype | None, device: torch.device | str | None) -> nn.Module:
    """``model`` itself, or a deep copy cast to ``dtype``/moved to ``device`` (the caller's model is untouched)."""
    want_dtype = dtype if dtype is not None else model_dtype(model)
    want_device = resolve_device(device) if device is not None else model_device(model)
    if want_dtype == model_dtype(model) and want_device == model_device(model):
        return model
    return copy.deepcopy(model).to(device=want_device, dtype=want_dtype)


def _measure_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch: int, selected: tuple[str, ...],
                   attack: str, eps: float, steps: int, step_size: float | None, norm: str, seed: int,
                   eig_iters: int, hvp_method: str) -> tuple[dict[str, torch.Tensor], str, int]:
    """Columns of one batch (model in eval mode, frozen): (columns, hvp method used, unconverged samples)."""
    # one Hessian operator at x serves curv_adv, curv_rand, eig_top and hs; its kept first backward pass also
    # gives the clean loss and gradient (one input gradient saved)
    op = HessianOperator(model, x, y, hvp_method)
    if any(m in selected for m in _AT_X) and op.build().graph is not None:
        loss, logits, grad = (t.detach() for t in op.graph[1:])
    else:
        loss, logits, grad = _loss_logits_grad(model, x, y)
    if attack == "pgd":
        x_adv, delta = pgd(model, x, y, eps, steps=steps, step_size=step_size, norm=norm,
                           seed=derive_seed(seed, batch, _STREAM_ATTACK))
    else:
        x_adv, delta = fgsm(model, x, y, eps, norm=norm)
    with torch.no_grad():
        logits_adv = model(x_adv)
    loss_adv = torch.nn.functional.cross_entropy(logits_adv, y, reduction="none")
    cols: dict[str, torch.Tensor] = {
        "label": y, "loss_clean": loss, "loss_adv": loss_adv,
        "correct_clean": correct_predictions(logits, y), "correct_adv": correct_predictions(logits_adv, y),
    }
    unconverged = 0
    if "grad" in selected:
        cols.update(_norms(grad))
    if "curv_adv" in selected:
        cols["curv_adv"] = _curvature_along(op, delta)
    if "curv_rand" in selected:
        d = _rademacher(x.shape, derive_seed(seed, batch, _STREAM_RAND), x.device, x.dtype)
        cols["curv_rand"] = _curvature_along(op, d)
    if "eig_top" in selected or "hs" in selected:
        ritz = _krylov(op, x, iters=max(eig_iters, HS_ITERS) if "hs" in selected else eig_iters, tol=EIG_TOL,
                       seed=derive_seed(seed, batch, _STREAM_EIG), top="eig_top" in selected,
                       k=HS_K if "hs" in selected else None)
        if "eig_top" in selected:
            cols["eig_top"] = _top_from_ritz(ritz, x)[0]
            unconverged = x.shape[0] - _info(ritz)["converged"]
        if "hs" in selected:
            cols["hs"] = _spectrum_from_ritz(ritz, HS_K, x.shape[0]).abs().mean().expand(x.shape[0])
    if "hs_adv" in selected:  # the official code evaluates hs at x_adv when an attack is given
        ritz = _krylov(HessianOperator(model, x_adv, y, op.method), x_adv, iters=HS_ITERS, tol=EIG_TOL,
                       seed=derive_seed(seed, batch, _STREAM_HS_ADV), top=False, k=HS_K)
        cols["hs_adv"] = _spectrum_from_ritz(ritz, HS_K, x.shape[0]).abs().mean().expand(x.shape[0])
    hvp_method = op.method
    if "taylor_gap" in selected:
        cols["taylor_gap"] = _taylor_gap(model, x, y, delta, loss=loss, grad=grad)
    if "logit_var" in selected:
        cols["logit_var"] = _logit_variation(logits, logits_adv, LOGIT_TOP)
    return cols, hvp_method, unconverged


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, attack: str = "pgd",
            steps: int = 10, step_size: float | None = None, norm: str = "linf",
            measures: str | Iterable[str] | None = None, batch_size: int = 128, seed: int = 0,
            eig_iters: int = 20, progress: bool = False, dtype: torch.dtype | None = None,
            device: torch.device | str | None = None, hvp_method: str = "auto") -> pd.DataFrame:
    """Attack ``x`` and compute the selected input-landscape measures for every sample.

    Samples are processed in batches of ``batch_size``; within a batch the measures are exact per sample
    (the model runs in eval mode). Randomness (PGD start, Rademacher direction, power-iteration start) is
    drawn from generators seeded by ``(seed, batch index)``, so a result is reproducible for a given
    ``seed`` and ``batch_size``.

    Args:
        model: classifier mapping (B, ...) inputs in [0,1] to (B, K) logits. Never modified: its mode is
            restored, no ``.grad`` is left, and a copy is used when ``dtype``/``device`` differ from its own.
        x: (N, ...) inputs in [0,1] (uint8 scaled by 1/255).
        y: (N,) integer labels.
        eps: attack radius in [0,1] pixel units (>= 0).
        attack: ``"pgd"`` (default) or ``"fgsm"``.
        steps: PGD steps. Default 10.
        step_size: PGD step; default 2.5·eps/steps.
        norm: ``"linf"`` (default) or ``"l2"``.
        measures: names from :data:`MEASURES` (a list or a comma-separated string); None =
            :data:`DEFAULT_MEASURES`.
        batch_size: samples per batch. Default 128.
        seed: base seed. Default 0.
        eig_iters: most Lanczos steps for ``eig_top``. Default 20 (``hs`` uses at least 60).
        progress: show a tqdm progress bar over batches. Default False.
        dtype: compute in this dtype, e.g. ``torch.float64`` for precise curvature (model copied and cast).
        device: compute on this device (model copied there if elsewhere); default the model's device.
        hvp_method: Hessian-vector product method, see :func:`landscape.measures.curvature.hvp`.

    Returns:
        DataFrame with the columns of :func:`columns` (``sample``, ``label``, losses, correctness, then the
        measure columns) and the settings in ``df.attrs`` (see the module docstring).

    Raises:
        ValueError: unknown measure/attack/norm/method, bad eps/steps/batch_size, x outside [0,1], bad labels.
        TypeError: wrong argument types.

    Example:
        >>> model = create_model("mlp", hidden=(16,))
        >>> df = measure(model, torch.rand(8, 1, 8, 8), torch.arange(8), eps=0.1, measures=["grad"])
        >>> list(df.columns)[-3:]
        ['grad_l1', 'grad_l2', 'grad_linf']
    """
    _check_model(model)
    selected = _check_measures(measures)
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r} (allowed: {', '.join(ATTACKS)})")
    norm = _check_norm(norm).value
    eps = _check_eps(eps)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eig_iters", eig_iters)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if hvp_method not in HVP_METHODS:
        raise ValueError(f"unknown hvp_method {hvp_method!r} (allowed: {', '.join(HVP_METHODS)})")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    work = _working_model(model, dtype, device)
    x, y = check_model_batch(work, x, y, unit_box=True)

    dev = model_device(work)
    parts: list[dict[str, np.ndarray]] = []
    method, unconverged = hvp_method, 0
    starts = range(0, x.shape[0], batch_size)
    with eval_mode(work), frozen_params(work):
        for batch, start in enumerate(tqdm(starts, desc="measure", unit="batch", disable=not progress)):
            xb = x[start:start + batch_size].to(dev).contiguous()
            yb = y[start:start + batch_size].to(dev)
            cols, method, n_bad = _measure_batch(
                work, xb, yb, batch=batch, selected=selected, attack=attack, eps=eps, steps=steps,
                step_size=step_size, norm=norm, seed=seed, eig_iters=eig_iters, hvp_method=method)
            unconverged += n_bad
            part = {"sample": np.arange(start, start + xb.shape[0], dtype=np.int64)}
            part.update({k: v.detach().cpu().numpy() for k, v in cols.items()})
            parts.append(part)

    names = columns(selected)
    df = pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in names})
    for c in names[2:]:
        if c not in ("correct_clean", "correct_adv"):
            df[c] = df[c].astype(np.float64)
    df["label"] = df["label"].astype(np.int64)
    numeric = df.select_dtypes(include="floating").to_numpy()
    nonfinite = int((~np.isfinite(numeric)).sum())
    df.attrs.update({
        "eps": eps, "attack": attack, "steps": steps if attack == "pgd" else 1,
        "step_size": (2.5 * eps / steps if step_size is None else float(step_size)) if attack == "pgd" else eps,
        "norm": norm, "seed": int(seed), "batch_size": batch_size, "eig_iters": eig_iters,
        "dtype": str(model_dtype(work)).replace("torch.", ""), "measures": list(selected),
        "hvp_method": method if any(m in selected for m in ("curv_adv", "curv_rand", "eig_top", "hs", "hs_adv"))
        else None,
        "eig_unconverged": unconverged if "eig_top" in selected else None,
        "nonfinite": nonfinite,
    })
    if nonfinite:
        warnings.warn(f"measure: {nonfinite} NaN/Inf values in the result table (see df.attrs['nonfinite']); "
                      "try dtype=torch.float64", RuntimeWarning, stacklevel=2)
    return df
