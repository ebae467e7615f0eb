"""Per-sample measures of the input loss landscape: gradients, curvature, Taylor gap, logit variation.

Every function takes ``(model, x, y, ...)`` and returns per-sample tensors (B,); see ``docs/measures.md``.
"""
from . import curvature
from .curvature import directional_curvature, hvp, top_eigenvalue

__all__ = ["curvature", "hvp", "directional_curvature", "top_eigenvalue"]
