"""The figure registry: one :class:`FigureSpec` per figure kind drives ``landscape plot``, the report and the
recipes in ``figures/``.

Adding a figure is one plotting file plus one line here: ``register(FigureSpec("name", plot_fn, ("table",),
"caption"))``. ``plot_fn(table, **options) -> Figure`` takes the table of the run file named first in
``tables`` (a key of :data:`landscape.runs.RUN_FILES`) and any of the options the CLI and the report pass
(``measures``, ``by``, ``split``, ``sample``, ``surface``, ``violin``, ``log``, ``since``, ``diagnoses``, ``title``); each
function receives only the options it declares.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .correlation import plot_measure_vs_loss
from .curves import plot_learning_curves
from .distributions import plot_distributions
from .first_order import plot_first_order_share
from .interactive import interactive_method_curves, interactive_method_measures
from .measures import available_measures, plot_measures
from .methods import plot_method_curves, plot_method_measures, pool_by_method
from .slices import plot_slices_1d, plot_surface
from .weight_space import plot_training_paths, plot_weight_slices_best_last

#: Report sections: the comparison opens the page; per-run detail is collapsed.
SECTIONS = ("comparison", "detail")


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One figure kind.

    Attributes:
        name: the kind (``landscape plot NAME``) and the report's key.
        plot: ``(table, **options) -> Figure`` (an Axes is accepted: its figure is used).
        tables: run-file keys; the first is the table the figure draws (a run directory stands for it).
        caption: what the figure shows, for the report.
        title: heading in the report (default: ``name``).
        stem: default output file name without extension (default: ``name``).
        best_last: the report keeps each run's best and last epoch (labelled) before drawing.
        section: ``comparison`` (top of the report) or ``detail`` (per run, collapsed).
        per_run: the report draws one figure per run.
        interactive: optional ``(table) -> plotly Figure`` shown in the HTML report instead of the PNG.
        needs: columns (any one suffices) the table must have for the report to show the figure at all;
            for figures of opt-in measures, so a run without them gets no "skipped" note.
    """

    name: str
    plot: Callable[..., Any]
    tables: tuple[str, ...]
    caption: str
    title: str = ""
    stem: str = ""
    best_last: bool = False
    section: str = "comparison"
    per_run: bool = False
    interactive: Callable[[pd.DataFrame], Any] | None = None
    needs: tuple[str, ...] = ()

    def shown_for(self, table: pd.DataFrame) -> bool:
        """Whether ``table`` has what the figure draws (see ``needs``)."""
        return not self.needs or any(c in table.columns for c in self.needs)

    def __post_init__(self):
        if self.section not in SECTIONS:
            raise ValueError(f"FigureSpec {self.name!r}: section must be one of {SECTIONS}, got {self.section!r}")
        if not self.tables:
            raise ValueError(f"FigureSpec {self.name!r}: name at least one run-file key in tables")

    @property
    def table(self) -> str:
        """The run-file key of the table drawn."""
        return self.tables[0]

    def takes(self, option: str) -> bool:
        """Whether the plot function declares ``option``."""
        return option in inspect.signature(self.plot).parameters

    def draw(self, table: pd.DataFrame, **options) -> Figure:
        """Draw from ``table``, passing the options the plot function declares (None values dropped)."""
        params = inspect.signature(self.plot).parameters
        kw = {k: v for k, v in options.items() if v is not None and k in params}
        out = self.plot(table, **kw)
        return out.figure if isinstance(out, Axes) else out


FIGURES: dict[str, FigureSpec] = {}


def register(spec: FigureSpec) -> FigureSpec:
    """Add ``spec`` to :data:`FIGURES` (a name can be registered once)."""
    if spec.name in FIGURES:
        raise ValueError(f"figure {spec.name!r} is already registered")
    FIGURES[spec.name] = spec
    return spec


def figure_spec(name: str) -> FigureSpec:
    """The registered spec called ``name``; ValueError naming the known ones otherwise."""
    try:
        return FIGURES[name]
    except KeyError:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}") from None


# -------------------------------------------------------------- adapters: CLI/report options -> plot functions

def _surface(table, *, sample=None, by=None, surface: str = "both", title=None):
    return plot_surface(table, sample=sample, by=by, kind=surface, title=title)


def _contours(table, *, sample=None, title=None):
    return plot_surface(table, sample=sample, kind="contour", title=title)


def _distributions(table, *, measures: Sequence[str] | None = None, by=None, split="test", violin=False,
                   log: bool | str = "auto", title=None):
    return plot_distributions(table, _sample_measures(table, measures), by=by, split=split,
                              kind="violin" if violin else "hist", log=log, title=title)


def _method_distributions(table, *, measures=None, by=None, split="test", log: bool | str = "auto", title=None):
    return plot_distributions(pool_by_method(table), _sample_measures(table, measures), by=by, split=split,
                              log=log, transpose=True, title=title)


def _method_slices(table, *, by=None, title=None):
    return plot_slices_1d(pool_by_method(table), by=by, title=title)


def _sample_measures(table, measures) -> list[str]:
    if measures:
        return list(measures)
    found = [m for m in ("grad_l1", "curv_adv") if m in table.columns]
    if not found:
        raise ValueError("the per-sample table has no grad_l1/curv_adv column; name the columns to draw")
    return found


def _scatter(table, *, measures=None, split="test", since: int | Mapping | None = None, title=None):
    measure = (measures or [None])[0] or next((m for m in ("curv_adv", "grad_l1", *available_measures(table))
                                               if m in available_measures(table)), None)
    if measure is None:
        raise ValueError("the trajectory table has no '<measure>_mean' column")
    ax = plot_measure_vs_loss(table, measure, measure_split=split, loss_split=split, since=since)
    if title:
        ax.set_title(title)
    return ax


def _measures(table, *, measures=None, since: Mapping | None = None, title=None):
    """Every run's measures; dotted: the diagnosed best epochs (``since``), one line per method."""
    return plot_measures(table, measures, best_epochs=since if isinstance(since, Mapping) else None, title=title)


def _first_order(table, *, split="test", since: int | Mapping | None = None, title=None):
    return plot_first_order_share(table, split=split, best_epochs=since, title=title)


def _weight_slices(table, *, title=None):
    return plot_weight_slices_best_last(table, title=title)


def _weight_paths(table, *, since: int | Mapping | None = None, title=None):
    """Every run's PCA training path; the diamond: its diagnosed best epoch (``since``)."""
    return plot_training_paths(table, best=dict(since) if isinstance(since, Mapping) else since, title=title)


# ------------------------------------------------------------------------------------------- the figures

for _spec in (
    FigureSpec("method_curves", plot_method_curves, ("trajectory",),
               "Robust and clean test accuracy and robust test loss per epoch: per method the mean over its seeds "
               "(line) and their min–max (band); the star marks each method's best epoch. Hover the interactive "
               "version for each run's value.", title="Learning curves per method", interactive=interactive_method_curves),
    FigureSpec("method_measures", plot_method_measures, ("trajectory",),
               "Per-epoch test mean of each landscape measure over samples: per method the mean over seeds "
               "(line) and their min–max (band).", title="Landscape measures per method",
               interactive=interactive_method_measures),
    FigureSpec("method_slices1d", _method_slices, ("slices_1d", "trajectory"),
               "Median loss along each direction with its q10–q90 band over samples (seeds of a method pooled), "
               "best vs last epoch side by side; a = 0 is the clean input.", title="1D loss slices, best vs last",
               stem="slices_1d_methods", best_last=True),
    FigureSpec("method_distributions", _method_distributions, ("samples", "trajectory"),
               "Test-split distribution per sample (seeds of a method pooled), best vs last epoch; dashed lines "
               "are medians; heavy-tailed positive measures on a log axis.",
               title="Per-sample distributions, best vs last", stem="distributions_methods", best_last=True),
    FigureSpec("contours", _contours, ("slices_2d", "trajectory"),
               "Loss around the first sample of each sliced run, best vs last epoch, on one colour scale; the star "
               "is the clean input.", title="2D loss surfaces, best vs last", best_last=True),
    FigureSpec("scatter", _scatter, ("trajectory",),
               "Test mean of a landscape measure against the robust test loss, one point per epoch; Spearman ρ "
               "per run over the epochs from its best one on, earlier epochs faded: the diagnosis' ρ of that "
               "measure with the robust test loss (same epochs, same function).",
               title="Measure vs robust test loss", stem="measure_vs_loss"),
    FigureSpec("first_order_share", _first_order, ("trajectory",),
               "Curvature (left) and the first-order share of the adversarial loss increase, eps·‖∇ₓL‖ / "
               "(L(x_adv) − L(x)) (right), per epoch (median over samples) for every run; dotted lines at each "
               "run's best epoch. A share that falls as curvature grows means AT's gradient regularisation "
               "accounts for less of the robust loss.", title="Curvature and the first-order share",
               needs=("fo_share_mean", "fo_share_median")),
    FigureSpec("weight_slices1d", _weight_slices, ("weight_slices_1d", "trajectory"),
               "The weight landscape: mean loss of the probe set at w + α·d along a filter-normalised random "
               "direction d of the weights (Li et al. 2018; biases and BN parameters kept), best vs last epoch; "
               "the robust loss at the inputs attacked at the checkpoint itself (α = 0), kept fixed along the "
               "line. A curve that rises faster at the last epoch is a sharper weight minimum.",
               title="1D weight-space slices, best vs last", stem="weight_slices_1d", best_last=True),
    FigureSpec("weight_path", _weight_paths, ("weight_path_surface",),
               "The training path in weight space: each kept epoch's weights projected on the PCA plane of the "
               "run's weight trajectory (origin and star: the last epoch; diamond: the diagnosed best epoch; "
               "axes give each component's share of the variance), over the clean loss of the probe set on that "
               "plane. Each panel has its own plane and colour scale.",
               title="Training path on the weight-space loss surface (PCA plane)"),
    FigureSpec("curves", plot_learning_curves, ("trajectory",),
               "Clean and robust accuracy and loss per epoch from trajectory.parquet; the star marks the best "
               "robust test accuracy and the shaded band the robust-overfitting gap (best − last), both from "
               "the run's diagnosis (its metrics.csv when it has one; the panel names the source).",
               title="Learning curves per run (analysed checkpoints)", stem="learning_curves", section="detail"),
    FigureSpec("training_curves", plot_learning_curves, ("metrics",),
               "The same curves from the training log (metrics.csv), every epoch.",
               title="Training curves per run (metrics.csv)", section="detail"),
    FigureSpec("measures", _measures, ("trajectory",),
               "Per-epoch mean of each measure over samples for every run (with at most two runs, the band is "
               "the test q10–q90); dotted lines mark each run's diagnosed best epoch (one per method: the median "
               "over its seeds).",
               title="Landscape measures vs epoch, every run", section="detail"),
    FigureSpec("slices1d", plot_slices_1d, ("slices_1d", "trajectory"),
               "Median loss with its q10–q90 band over samples along each direction, per run, best vs last "
               "epoch; a = 0 is the clean input.", title="1D loss slices per run", stem="slices_1d",
               best_last=True, section="detail"),
    FigureSpec("distributions", _distributions, ("samples", "trajectory"),
               "Test-split distribution per sample and run, best vs last epoch; dashed lines are medians.",
               title="Per-sample distributions per run", best_last=True, section="detail"),
    FigureSpec("surface", _surface, ("slices_2d", "trajectory"),
               "Loss around the first sample, contour and 3D, best vs last epoch on one colour scale; the star is "
               "the clean input.", title="2D loss surface", best_last=True, section="detail", per_run=True),
):
    register(_spec)


__all__ = ["FIGURES", "SECTIONS", "FigureSpec", "figure_spec", "register"]
