"""Figures of the paper's diagnostics, drawn from the documented tables (never recomputing measures).

Every function takes DataFrames and returns a matplotlib Figure (multi-panel figures) or the Axes it drew on
(single-panel functions, which accept ``ax=None``); nothing is shown or saved. :func:`save_figure` writes
PNG/PDF and is what the CLI and the report call. :data:`FIGURES` (see :mod:`.registry`) lists every figure
kind that ``landscape plot``, the report and the recipes draw.
"""
from ._style import CMAP, PALETTE, save_figure, style
from ._tables import label_epochs
from .correlation import epoch_pairs, plot_measure_vs_loss
from .curves import plot_learning_curves
from .distributions import plot_distributions
from .first_order import plot_first_order_share
from .interactive import interactive_method_curves, interactive_method_measures
from .measures import PLOTTED_MEASURES, available_measures, plot_measures
from .methods import method_of, plot_method_curves, plot_method_measures, pool_by_method, seed_summary
from .registry import FIGURES, FigureSpec, figure_spec, register
from .slices import plot_contour, plot_slices_1d, plot_surface, plot_surface_3d, surface_grid
from .weight_space import plot_spectral_density, plot_training_path, plot_weight_contour, plot_weight_slice_1d

__all__ = [
    "CMAP", "PLOTTED_MEASURES", "FIGURES", "FigureSpec", "PALETTE", "available_measures", "epoch_pairs",
    "figure_spec", "interactive_method_curves", "interactive_method_measures", "label_epochs", "method_of",
    "plot_contour", "plot_distributions", "plot_first_order_share", "plot_learning_curves", "plot_measure_vs_loss", "plot_measures",
    "plot_method_curves", "plot_method_measures", "plot_slices_1d", "plot_surface", "plot_surface_3d",
    "pool_by_method", "register", "save_figure", "seed_summary", "style", "surface_grid",
    "plot_spectral_density", "plot_training_path", "plot_weight_contour", "plot_weight_slice_1d",
]
