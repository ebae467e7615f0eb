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
| ``eig_top`` | largest-magnitude eigenvalue of H_x (exact for piecewise-linear nets, else batched Lanczos of at most ``eig_iters`` steps) |
| ``taylor_gap`` | L(x+δ) − L(x) − ∇L(x)ᵀδ with δ = x_adv − x |
| ``logit_var`` | sum of the top 10 % (at least one) of \\|f(x_adv) − f(x)\\| entries of that sample |
| ``grad_l1_at_adv``, ... | the same measures evaluated at x_adv (measures ``grad_at_adv``, ``curv_adv_at_adv``, ...) |
| ``fo_share`` | eps·‖∇ₓL‖_* / (L(x_adv) − L(x)), NaN where the increase is < 1e-4 nats |
| ``w_eig_top``, ``w_trace``, ... | per-model weight-space measures (:mod:`~landscape.measures.weight_space`), one value on every row |

The selectable measures and their columns come from :mod:`landscape.measures.registry`; ``measures=None``
selects :data:`~landscape.measures.registry.DEFAULT_MEASURES`. What a measure needs is read from its
:class:`~landscape.measures.spec.MeasureSpec`, never from its name: ``point`` (the batch is handed to it seen
from x or x_adv), ``hessian`` (the clean loss/logits/gradient come from the kept first backward of the
clean-point Hessian operator when such a measure is at the clean point; ``hvp_method`` is reported),
``per_batch`` (a 0-d value repeated on the batch's rows), ``counters`` (``df.attrs`` counts such as
``eig_unconverged``) and ``undefined_ok`` (NaN counted in ``undefined``, not ``nonfinite``).

Per-model measures (``scope="model"``, the weight-space ``w_*``) are computed once per table, after the
batches, over the first ``weight_probe`` samples (``MeasureSettings.weight_probe``, default 256) and the
``x_adv`` this table's attack already made for them (no second attack; ``w_flat_worst`` re-attacks at the
perturbed weights with the same settings and per-batch seeds, as its definition asks), restricted to the
parameters ``weight_layers`` selects. Like a per-batch value, the result is written on every row (a constant
column), so per-split summaries (``w_trace_mean``, ...) are that value.

``df.attrs`` records the settings (``eps``, ``attack``, ``steps``, ``step_size``, ``norm``, ``random_start``,
``seed``, ``batch_size``, ``eig_iters``, ``dtype``, ``measures``; with a ``w_*`` measure also ``weight_probe``
(samples used) and ``weight_layers``), the Hessian-vector-product method actually
used (``hvp_method``), the eigen-solvers used by ``eig_top``/``hs`` (``eig_solver``: ``gauss_newton``,
``lanczos`` or both), how many samples' Lanczos runs did not converge (``eig_unconverged``), the number
of NaN/Inf values in the table (``nonfinite``; a warning is raised when it is not 0; documented undefined
values such as ``fo_share``'s NaN are counted apart, in ``undefined``).
"""
from __future__ import annotations

import copy
import warnings
from typing import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import Dataset
from .._progress import tqdm  # quiet off a terminal

from .._base import (check_model_batch, correct_predictions, derive_seed, eval_mode, frozen_params, model_device,
                     model_dtype, per_sample_loss, resolve_device)
from ..attacks import AttackSettings, run_attack
from ..datasets import open_dataset
from ..datasets.stream import batches
from ._autograd import check_model, loss_logits_grad, shared_operator
from .settings import MeasureSettings
from .registry import counters, select
from .spec import STREAM_ATTACK, BatchContext, MeasureSpec
from .weight_flatness import ProbeBatch
from .weight_hessian import select_parameters
from .weight_space import ProbeContext

__all__ = ["ATTACKS", "BOOL_COLUMNS", "measure", "measure_batch", "columns"]

ATTACKS = ("pgd", "fgsm")
BASE_COLUMNS = ("sample", "label", "loss_clean", "loss_adv", "correct_clean", "correct_adv")
BOOL_COLUMNS = ("correct_clean", "correct_adv")


def columns(measures: str | Iterable[str] | None = None) -> list[str]:
    """Column names of :func:`measure`'s table for the selected ``measures``, in order."""
    return list(BASE_COLUMNS) + [c for s in select(measures) for c in s.columns]


def _working_model(model: nn.Module, dtype: torch.dtype | None, device: torch.device | str | None) -> nn.Module:
    """``model`` itself, or a deep copy cast to ``dtype``/moved to ``device`` (the caller's model is untouched)."""
    want_dtype = dtype if dtype is not None else model_dtype(model)
    want_device = resolve_device(device) if device is not None else model_device(model)
    if want_dtype == model_dtype(model) and want_device == model_device(model):
        return model
    return copy.deepcopy(model).to(device=want_device, dtype=want_dtype)


def _clean_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, specs: tuple[MeasureSpec, ...],
                 state: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, logits, grad) at the clean point, detached: taken from the kept first backward of the batch's
    Hessian operator when a measure that declares ``hessian`` at the clean point builds it anyway (one input
    gradient saved; the attack has run by then, so the graph is not held through it), else one plain
    gradient."""
    if any(s.hessian and s.point == "clean" for s in specs):
        op = shared_operator(model, x, y, state, "clean").build()
        graph = op.graph
        if graph is not None:
            # the graph built, so double backpropagation works here (a measure records a later fallback)
            if state["hvp_method"] == "auto":
                state["hvp_method"] = "double_backprop"
            return graph.loss.detach(), graph.logits.detach(), graph.grad.detach()
    return loss_logits_grad(model, x, y)


def measure_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch: int,
                   specs: tuple[MeasureSpec, ...], settings: AttackSettings, seed: int, eig_iters: int,
                   state: dict) -> tuple[dict[str, torch.Tensor], ProbeBatch]:
    """Columns of one batch (model in eval mode, frozen), and the batch as a probe of the per-model measures;
    ``state`` carries the HVP method across batches."""
    attack_seed = derive_seed(seed, batch, STREAM_ATTACK)
    x_adv, delta = run_attack(model, x, y, settings, seed=attack_seed)
    with torch.no_grad():
        logits_adv = model(x_adv)
    loss_adv = per_sample_loss(logits_adv, y)
    state.pop("cache", None)
    loss, logits, grad = _clean_point(model, x, y, specs, state)
    cols: dict[str, torch.Tensor] = {
        "label": y, "loss_clean": loss, "loss_adv": loss_adv,
        "correct_clean": correct_predictions(logits, y), "correct_adv": correct_predictions(logits_adv, y),
    }
    ctx = BatchContext(model=model, x=x, y=y, loss=loss, logits=logits, grad=grad, x_adv=x_adv, delta=delta,
                       loss_adv=loss_adv, logits_adv=logits_adv, settings=settings, seed=seed, batch=batch,
                       eig_iters=eig_iters, state=state)
    for spec in specs:
        out = spec.fn(ctx.at(spec.point))
        for c in spec.columns:
            value = out[c].detach()
            cols[c] = value.expand(x.shape[0]) if value.dim() == 0 else value  # per-batch: one value per row
    state.pop("cache", None)
    return cols, ProbeBatch(x, y, x_adv, attack_seed)


def _model_measures(model: nn.Module, specs: tuple[MeasureSpec, ...], probe: list[ProbeBatch], *,
                    settings: AttackSettings, seed: int, layers: str | None, progress: bool) -> dict[str, float]:
    """``{column: value}`` of the per-model measures, each computed once on ``probe`` (the model restored)."""
    ctx = ProbeContext(model=model, probe=probe, settings=settings, seed=seed, layers=layers)
    values: dict[str, float] = {}
    for spec in tqdm(specs, desc="weight measures", disable=not progress, leave=False):
        out = spec.fn(ctx)
        values.update({c: float(out[c]) for c in spec.columns})
    ctx.state.clear()  # drop the kept Hessian graphs
    return values


def measure(model: nn.Module, x: torch.Tensor | Dataset, y: torch.Tensor | None = None, *, eps: float | None = None, attack: str = "pgd",
            steps: int = 10, step_size: float | None = None, norm: str = "linf", random_start: bool = True,
            settings: AttackSettings | None = None,
            measures: str | Iterable[str] | None = None, batch_size: int = 128, seed: int = 0,
            eig_iters: int = 20, progress: bool = False, dtype: torch.dtype | None = None,
            device: torch.device | str | None = None, hvp_method: str = "auto",
            workers: int | None = None, options: MeasureSettings | None = None, weight_probe: int = 256,
            weight_layers: str | None = None) -> pd.DataFrame:
    """Attack ``x`` and compute the selected input-landscape measures for every sample.

    Samples are processed in batches of ``batch_size``; within a batch the measures are exact per sample
    (the model runs in eval mode). Randomness (PGD start, Rademacher direction, Lanczos start vectors) is
    drawn from generators seeded by ``(seed, batch index)``, so a result is reproducible for a given
    ``seed`` and ``batch_size``.

    Args:
        model: classifier mapping (B, ...) inputs in [0,1] to (B, K) logits. Never modified: its mode is
            restored, no ``.grad`` is left, and a copy is used when ``dtype``/``device`` differ from its own.
        x: (N, ...) inputs in [0,1] (uint8 scaled by 1/255), or a ``torch.utils.data.Dataset`` of
            ``(image, label)`` pairs (e.g. ``landscape.datasets.open_dataset(...)``), decoded batch by batch
            (peak memory follows ``batch_size``, not the dataset; the numbers equal those of the same samples
            given as tensors).
        y: (N,) integer labels; None when ``x`` is a Dataset.
        eps: attack radius in [0,1] pixel units (8/255 = 0.0314; values above 1 are refused).
        attack: ``"pgd"`` (default) or ``"fgsm"``.
        steps: PGD steps. Default 10.
        step_size: PGD step; default 2.5·eps/steps.
        norm: ``"linf"`` (default) or ``"l2"``.
        random_start: PGD from a random point of the eps ball. Default True.
        settings: the attack as one :class:`~landscape.attacks.AttackSettings` (e.g.
            ``AttackSettings.official(8/255)``), instead of ``eps``/``attack``/``steps``/``step_size``/
            ``norm``/``random_start`` (give one or the other).
        measures: names from :data:`~landscape.measures.registry.MEASURES` (a list or a comma-separated
            string); None = :data:`~landscape.measures.registry.DEFAULT_MEASURES`.
        batch_size: samples per batch. Default 128.
        seed: base seed. Default 0.
        eig_iters: most Lanczos steps for ``eig_top`` (``hs`` uses at least 60) where the Gauss–Newton
            solver does not apply (smooth nets, see :mod:`landscape.measures.gauss_newton`). Default 20.
        progress: show a tqdm progress bar (images/s). Default False.
        dtype: compute in this dtype, e.g. ``torch.float64`` for precise curvature (model copied and cast).
        device: compute on this device (model copied there if elsewhere); default the model's device.
        hvp_method: Hessian-vector product method, see :func:`landscape.measures.curvature.hvp`.
        workers: DataLoader worker processes decoding a Dataset ``x``; default: none for arrays in memory, up
            to 4 for datasets that decode files.
        weight_probe: samples (the first ones) of the per-model weight-space measures ``w_*``. Default 256.
        weight_layers: glob of the parameters the ``w_*`` measures use (e.g. ``"fc2.*"``); None = all.
        options: ``measures``, ``batch_size``, ``seed``, ``eig_iters``, ``hvp_method``, ``dtype``,
            ``weight_probe`` and ``weight_layers`` as one
            :class:`~landscape.measures.settings.MeasureSettings` (give one or the other), as ``settings``
            does for the attack.

    Returns:
        DataFrame with the columns of :func:`columns` (``sample``, ``label``, losses, correctness, then the
        measure columns) and the settings in ``df.attrs`` (see the module docstring).

    Raises:
        ValueError: unknown measure/attack/norm/method, eps outside [0, 1], bad steps/batch_size, x outside
            [0,1], bad labels, both ``settings`` and loose attack arguments.
        TypeError: wrong argument types.

    Example:
        >>> model = create_model("mlp", hidden=(16,))
        >>> df = measure(model, torch.rand(8, 1, 8, 8), torch.arange(8), eps=0.1, measures=["grad"])
        >>> list(df.columns)[-3:]
        ['grad_l1', 'grad_l2', 'grad_linf']
    """
    check_model(model)
    opts = MeasureSettings.from_loose(options, measures=measures, batch_size=batch_size, seed=seed,
                                      eig_iters=eig_iters, hvp_method=hvp_method, dtype=dtype,
                                      weight_probe=weight_probe, weight_layers=weight_layers)
    specs = select(opts.measures)
    model_specs = tuple(s for s in specs if s.scope == "model")
    specs = tuple(s for s in specs if s.scope != "model")
    settings = _attack_settings(settings, eps=eps, attack=attack, steps=steps, step_size=step_size, norm=norm,
                                random_start=random_start)
    batch_size, seed, eig_iters, dtype = opts.batch_size, opts.seed, opts.eig_iters, opts.torch_dtype
    work = _working_model(model, dtype, device)
    if model_specs:
        select_parameters(work, opts.weight_layers)  # a pattern that matches nothing fails before any work
    stream, total = _batches(work, x, y, batch_size, workers)

    dev = model_device(work)
    parts: list[dict[str, np.ndarray]] = []
    counted = counters(specs)
    state: dict = {"hvp_method": opts.hvp_method, **{c: 0 for c in counted}}
    probe: list[ProbeBatch] = []
    start = 0
    with eval_mode(work), frozen_params(work), tqdm(total=total, desc="measure", unit="img", unit_scale=True,
                                                    disable=not progress, leave=False) as bar:
        for batch, (xb, yb) in enumerate(stream):
            xb, yb = xb.to(dev).contiguous(), yb.to(dev)
            cols, probe_batch = measure_batch(work, xb, yb, batch=batch, specs=specs, settings=settings,
                                               seed=seed, eig_iters=eig_iters, state=state)
            room = opts.weight_probe - start
            if model_specs and room >= xb.shape[0]:
                probe.append(probe_batch)
            elif model_specs and room > 0:  # a cut batch is attacked again alone, so its seed reproduces its x_adv
                x_cut, y_cut = xb[:room], yb[:room]
                probe.append(ProbeBatch(x_cut, y_cut, run_attack(work, x_cut, y_cut, settings, seed=probe_batch.seed)[0],
                                        probe_batch.seed))
            part = {"sample": np.arange(start, start + xb.shape[0], dtype=np.int64)}
            part.update({k: v.detach().cpu().numpy() for k, v in cols.items()})
            parts.append(part)
            start += xb.shape[0]
            bar.update(xb.shape[0])
        weights = _model_measures(work, model_specs, probe, settings=settings, seed=seed,
                                  layers=opts.weight_layers, progress=progress) if model_specs else {}

    names = [s.name for s in specs + model_specs]
    table_columns = columns(names)
    df = pd.DataFrame({c: np.full(start, weights[c]) if c in weights else np.concatenate([p[c] for p in parts])
                       for c in table_columns})
    for c in table_columns[2:]:
        if c not in BOOL_COLUMNS:
            df[c] = df[c].astype(np.float64)
    df["label"] = df["label"].astype(np.int64)
    undefined_cols = [c for s in specs + model_specs if s.undefined_ok for c in s.columns]
    checked = [c for c in df.select_dtypes(include="floating").columns if c not in undefined_cols]
    nonfinite = int((~np.isfinite(df[checked].to_numpy())).sum())
    undefined = int(df[undefined_cols].isna().to_numpy().sum()) if undefined_cols else 0
    uses_hvp = any(s.hessian for s in specs)
    df.attrs.update({
        **settings.to_dict(), "seed": int(seed), "batch_size": batch_size, "eig_iters": eig_iters,
        "dtype": str(model_dtype(work)).replace("torch.", ""), "measures": names,
        "hvp_method": state["hvp_method"] if uses_hvp else None,
        **{c: state[c] if c in counted else None for c in counters()},
        "eig_solver": "+".join(sorted(state.get("eig_solvers", ()))) or None,
        "nonfinite": nonfinite, "undefined": undefined,
    })
    if model_specs:
        df.attrs.update({"weight_probe": sum(int(b.x.shape[0]) for b in probe), "weight_layers": opts.weight_layers})
    if nonfinite:
        warnings.warn(f"measure: {nonfinite} NaN/Inf values in the result table (see df.attrs['nonfinite']); "
                      "try dtype=torch.float64", RuntimeWarning, stacklevel=2)
    return df


def _batches(model: nn.Module, x, y, batch_size: int, workers: int | None):
    """(iterator of (x, y) batches, number of samples) for tensors or a Dataset."""
    if isinstance(x, Dataset):
        if y is not None:
            raise TypeError("y must be None when x is a Dataset (its items carry the labels)")
        ds = open_dataset(x)
        if len(ds) == 0:
            raise ValueError("the dataset is empty")
        # each decoded batch is checked as it arrives (the whole set is never in memory)
        checked = (check_model_batch(model, xb, yb, unit_box=True) for xb, yb in batches(ds, batch_size,
                                                                                        workers=workers))
        return checked, len(ds)
    x, y = check_model_batch(model, x, y, unit_box=True)  # whole-tensor checks once, before any work
    return ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)), x.shape[0]


def _attack_settings(settings: AttackSettings | None, **loose) -> AttackSettings:
    """``settings`` itself, or one built from the loose arguments (ValueError when both are given)."""
    if settings is None:
        if loose["eps"] is None:
            raise TypeError("measure() needs eps (or settings=AttackSettings(...))")
        if loose["attack"] not in ATTACKS:
            raise ValueError(f"unknown attack {loose['attack']!r} (allowed: {', '.join(ATTACKS)})")
        return AttackSettings(**loose)
    if not isinstance(settings, AttackSettings):
        raise TypeError(f"settings must be an AttackSettings, got {type(settings).__name__}")
    defaults = dict(eps=None, attack="pgd", steps=10, step_size=None, norm="linf", random_start=True)
    given = sorted(k for k, v in loose.items() if v != defaults[k])
    if given:
        raise ValueError(f"give the attack either as settings= or as {', '.join(given)}, not both")
    return settings
