"""Figures of the paper's diagnostics, drawn from the documented tables (never recomputing measures).

Every function takes DataFrames and returns a matplotlib Figure (multi-panel figures) or the Axes it drew on
(single-panel functions, which accept ``ax=None``); nothing is shown or saved. :func:`save_figure` writes
PNG/PDF and is what the CLI and the report call.
"""
from ._style import CMAP, PALETTE, save_figure, style
from ._tables import label_epochs
from .correlation import epoch_pairs, plot_measure_vs_loss, spearman
from .curves import plot_learning_curves
from .distributions import plot_distributions
from .first_order import plot_first_order_share
from .measures import DEFAULT_MEASURES, available_measures, plot_measures
from .slices import plot_contour, plot_slices_1d, plot_surface, plot_surface_3d, surface_grid

__all__ = [
    "CMAP", "DEFAULT_MEASURES", "PALETTE", "available_measures", "epoch_pairs", "label_epochs",
    "plot_contour", "plot_distributions", "plot_first_order_share", "plot_learning_curves", "plot_measure_vs_loss", "plot_measures",
    "plot_slices_1d", "plot_surface", "plot_surface_3d", "save_figure", "spearman", "style", "surface_grid",
]
