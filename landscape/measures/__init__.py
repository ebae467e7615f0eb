"""Per-sample measures of the input loss landscape: gradients, curvature, Taylor gap, logit variation.

Every function takes ``(model, x, y, ...)`` and returns per-sample tensors (B,); ``measure`` gathers them
into one DataFrame. See ``docs/measures.md``.
"""
from . import curvature, first_order, gradients, registry, taylor
from .curvature import directional_curvature, hessian_spectrum, hvp, top_eigenvalue
from .first_order import first_order_share
from .gradients import gradient_norms, input_gradient
from .registry import DEFAULT_MEASURES, MEASURES
from .spec import BatchContext, MeasureSpec
from .table import measure
from .taylor import logit_variation, logit_variation_batch, taylor_gap

__all__ = [
    "MEASURES", "DEFAULT_MEASURES", "measure", "MeasureSpec", "BatchContext",
    "curvature", "first_order", "gradients", "registry", "taylor",
    "first_order_share",
    "input_gradient", "gradient_norms",
    "hvp", "directional_curvature", "top_eigenvalue", "hessian_spectrum",
    "taylor_gap", "logit_variation", "logit_variation_batch",
]
