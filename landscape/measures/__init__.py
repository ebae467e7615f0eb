"""Per-sample measures of the input loss landscape: gradients, curvature, Taylor gap, logit variation; and
per-model measures of the weight loss landscape (``w_*``: Hessian spectrum, Stutz flatness, AWP loss).

Every function takes ``(model, x, y, ...)`` and returns per-sample tensors (B,); ``measure`` gathers them
into one DataFrame. See ``docs/measures.md``.
"""
from . import curvature, first_order, gradients, registry, taylor, weight_flatness, weight_hessian, weight_space
from .curvature import directional_curvature, hessian_spectrum, hvp, top_eigenvalue
from .first_order import first_order_share
from .gradients import gradient_norms, input_gradient
from .registry import DEFAULT_MEASURES, MEASURES
from .spec import BatchContext, MeasureSpec
from .table import measure
from .taylor import logit_variation, logit_variation_batch, taylor_gap
from .weight_flatness import awp_loss, flatness_average, flatness_worst
from .weight_hessian import WeightHessian, hutchinson_trace, spectral_density, top_eigenvalues

__all__ = [
    "MEASURES", "DEFAULT_MEASURES", "measure", "MeasureSpec", "BatchContext",
    "curvature", "first_order", "gradients", "registry", "taylor",
    "first_order_share",
    "input_gradient", "gradient_norms",
    "hvp", "directional_curvature", "top_eigenvalue", "hessian_spectrum",
    "taylor_gap", "logit_variation", "logit_variation_batch",
    "weight_flatness", "weight_hessian", "weight_space",
    "WeightHessian", "top_eigenvalues", "hutchinson_trace", "spectral_density",
    "flatness_average", "flatness_worst", "awp_loss",
]
