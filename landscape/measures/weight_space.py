"""Weight-space measures of a checkpoint, registered beside the input-space ones (columns ``w_*``).

They are *per model* (``MeasureSpec.scope == "model"``): the measure table computes each selected one once,
over its first ``weight_probe`` samples and the ``x_adv`` its own attack made for them, and writes the value
on every row (see :mod:`landscape.measures.table`). A spec's function takes a :class:`ProbeContext`.

| measure | columns | definition |
|---|---|---|
| ``w_eig_top`` | ``w_eig_top``, ``w_eig_top_res``, ``w_eig_top_clean``, ``w_eig_top_clean_res`` | largest eigenvalue of the weight Hessian of the robust / clean probe loss (Lanczos), and its relative residual |
| ``w_trace`` | ``w_trace``, ``w_trace_se``, ``w_trace_clean``, ``w_trace_clean_se`` | Hutchinson trace and standard error |
| ``w_density`` | ``w_density_neg``, ``w_density_std`` (+ ``_clean``) | SLQ spectral density: mass below 0, spread |
| ``w_flat_avg`` | ``w_flat_avg``, ``w_flat_avg_se`` | Stutz et al. average-case flatness of the robust loss |
| ``w_flat_worst`` | ``w_flat_worst`` | Stutz et al. worst-case flatness of the robust loss |
| ``w_awp`` | ``w_awp``, ``w_awp_gap`` | AWP weight-perturbed robust loss, and its increase |

The functions behind them (:mod:`landscape.measures.weight_hessian`,
:mod:`landscape.measures.weight_flatness`) are public and take plain ``(model, batches, ...)``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn as nn

from .._base import derive_seed
from ..attacks import AttackSettings
from .spec import STREAM_WEIGHT, MeasureSpec
from .weight_flatness import (AVG_XI, AWP_GAMMA, WORST_XI, ProbeBatch, awp_loss, flatness_average,
                              flatness_worst)
from .weight_hessian import WeightHessian, hutchinson_trace, preserved, spectral_density, top_eigenvalues

__all__ = ["ProbeContext", "W_EIG_TOP", "W_TRACE", "W_DENSITY", "W_FLAT_AVG", "W_FLAT_WORST", "W_AWP",
           "EIG_TOL", "EIG_STEPS", "TRACE_RTOL", "TRACE_MAX", "DENSITY_RUNS", "DENSITY_STEPS", "FLAT_SAMPLES",
           "WORST_STEPS"]

# the table's settings of each estimator (the functions' own defaults; see docs/measures.md)
EIG_TOL, EIG_STEPS = 1e-3, 100
TRACE_RTOL, TRACE_MAX = 0.05, 100
DENSITY_RUNS, DENSITY_STEPS = 2, 30
FLAT_SAMPLES, WORST_STEPS = 10, 5


@dataclasses.dataclass
class ProbeContext:
    """The probe a per-model measure sees.

    Attributes:
        model: the classifier (eval mode; restored by every function).
        probe: :class:`~landscape.measures.weight_flatness.ProbeBatch` list: the table's first
            ``weight_probe`` samples, their labels, the ``x_adv`` of the table's attack and its seed.
        settings: the table's attack (re-attacks of ``w_flat_worst``).
        seed: the table's base seed.
        layers: glob of the parameters measured (``weight_layers``); None = all.
        state: shared between the measures of one table (e.g. the Hessian operators, built once).
    """

    model: nn.Module
    probe: list[ProbeBatch]
    settings: AttackSettings
    seed: int
    layers: str | None = None
    state: dict = dataclasses.field(default_factory=dict)

    def seed_for(self, name: str) -> int:
        return derive_seed(self.seed, STREAM_WEIGHT, sum(name.encode()))

    def operator(self, loss: str) -> WeightHessian:
        """The weight Hessian of the ``"robust"`` (at ``x_adv``) or ``"clean"`` probe loss, built once."""
        key = f"weight_hessian_{loss}"
        if key not in self.state:
            batches = [(b.x_adv if loss == "robust" else b.x, b.y) for b in self.probe]
            self.state[key] = WeightHessian(self.model, batches, self.layers)
        return self.state[key]


def _both(fn: Callable[[WeightHessian, int], dict[str, float]], stem: str | None = None):
    """A measure of the robust loss's Hessian (columns as ``fn`` names them) and the clean one's (``_clean``
    inserted after ``stem``, default the measure name: ``w_trace_se`` -> ``w_trace_clean_se``; with
    ``stem=""`` appended: ``w_density_neg`` -> ``w_density_neg_clean``)."""
    def measure(ctx: ProbeContext, name: str) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        with preserved(ctx.model):
            for loss in ("robust", "clean"):
                for col, value in fn(ctx.operator(loss), ctx.seed_for(name)).items():
                    cut = len(name if stem is None else (stem or col))
                    key = col if loss == "robust" else f"{col[:cut]}_clean{col[cut:]}"
                    out[key] = torch.tensor(float(value), dtype=torch.float64)
        return out
    return measure


def _eig(op: WeightHessian, seed: int) -> dict[str, float]:
    r = top_eigenvalues(op, 1, max_steps=EIG_STEPS, tol=EIG_TOL, seed=seed)
    value = float(r.values[0])
    return {"w_eig_top": value, "w_eig_top_res": float(r.residuals[0]) / max(abs(value), 1e-30)}


def _trace(op: WeightHessian, seed: int) -> dict[str, float]:
    r = hutchinson_trace(op, rtol=TRACE_RTOL, max_samples=TRACE_MAX, seed=seed)
    return {"w_trace": r.trace, "w_trace_se": r.se}


def _density(op: WeightHessian, seed: int) -> dict[str, float]:
    d = spectral_density(op, runs=DENSITY_RUNS, steps=DENSITY_STEPS, seed=seed)
    return {"w_density_neg": d.negative_mass, "w_density_std": d.std}


def _named(name: str, fn):
    return lambda ctx: fn(ctx, name)


def _flat_avg(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    r = flatness_average(ctx.model, ctx.probe, xi=AVG_XI, samples=FLAT_SAMPLES, layers=ctx.layers,
                         seed=ctx.seed_for("w_flat_avg"))
    return {"w_flat_avg": torch.tensor(r.value, dtype=torch.float64),
            "w_flat_avg_se": torch.tensor(r.se, dtype=torch.float64)}


def _flat_worst(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    r = flatness_worst(ctx.model, ctx.probe, ctx.settings, xi=WORST_XI, steps=WORST_STEPS, layers=ctx.layers)
    return {"w_flat_worst": torch.tensor(r.value, dtype=torch.float64)}


def _awp(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    r = awp_loss(ctx.model, ctx.probe, gamma=AWP_GAMMA, layers=ctx.layers)
    return {"w_awp": torch.tensor(r.perturbed, dtype=torch.float64),
            "w_awp_gap": torch.tensor(r.value, dtype=torch.float64)}


_HESSIAN_PAPER = "PyHessian-style (Yao et al. 2020), robust loss at fixed x_adv and clean loss"

W_EIG_TOP = MeasureSpec(
    "w_eig_top", ("w_eig_top", "w_eig_top_res", "w_eig_top_clean", "w_eig_top_clean_res"),
    _named("w_eig_top", _both(_eig)),
    ("top weight-Hessian eigenvalue, robust", "relative Lanczos residual (robust)",
     "top weight-Hessian eigenvalue, clean", "relative Lanczos residual (clean)"),
    ("nats / weight²", "", "nats / weight²", ""), paper=_HESSIAN_PAPER, scope="model")

W_TRACE = MeasureSpec(
    "w_trace", ("w_trace", "w_trace_se", "w_trace_clean", "w_trace_clean_se"), _named("w_trace", _both(_trace)),
    ("weight-Hessian trace (robust loss)", "standard error of w_trace", "weight-Hessian trace (clean loss)",
     "standard error of w_trace_clean"), "nats / weight²", paper=_HESSIAN_PAPER, scope="model")

W_DENSITY = MeasureSpec(
    "w_density", ("w_density_neg", "w_density_std", "w_density_neg_clean", "w_density_std_clean"),
    _named("w_density", _both(_density, stem="")),
    ("negative mass of the weight-Hessian density (robust)", "spread of the weight-Hessian spectrum (robust)",
     "negative mass of the weight-Hessian density (clean)", "spread of the weight-Hessian spectrum (clean)"),
    ("fraction", "nats / weight²", "fraction", "nats / weight²"), scope="model")

W_FLAT_AVG = MeasureSpec(
    "w_flat_avg", ("w_flat_avg", "w_flat_avg_se"), _flat_avg,
    ("average-case flatness of the robust loss", "standard error of w_flat_avg"), "nats",
    paper="Stutz et al. 2021, average-case flatness (relative per-layer radius, fixed x_adv)", scope="model")

W_FLAT_WORST = MeasureSpec(
    "w_flat_worst", ("w_flat_worst",), _flat_worst, "worst-case flatness of the robust loss", "nats",
    paper="Stutz et al. 2021, worst-case flatness (relative per-layer radius, x_adv re-attacked)", scope="model")

W_AWP = MeasureSpec(
    "w_awp", ("w_awp", "w_awp_gap"), _awp, ("AWP weight-perturbed robust loss", "AWP robust-loss increase"),
    "nats", paper="Wu et al. 2020 (AWP), one normalised ascent step, gamma = 5e-3", scope="model")
