"""A measure against robust test loss across epochs, with Spearman's rank correlation per run."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D

from ..diagnose import spearman
from ._style import CMAP, MARKERS, new_axes, run_styles, style  # noqa: F401 - MARKERS kept importable here
from ._tables import check_choice, check_table, measure_label, rows_of_run, runs_of

STATISTICS = ("mean", "median", "q10", "q90")


def epoch_pairs(table: pd.DataFrame, measure: str, *, loss: str = "loss_adv", measure_split: str = "test",
                loss_split: str = "test", statistic: str = "mean") -> pd.DataFrame:
    """Per (run, epoch): the measure statistic on one split next to the loss on another.

    Args:
        table: trajectory table (``epoch``, ``split``, ``<measure>_<statistic>``, ``loss``; optional ``run``).
        measure: measure name, e.g. ``curv_adv`` or ``grad_l1``.
        loss: loss column, ``loss_adv`` (robust) or ``loss_clean``.
        measure_split, loss_split: split of each axis (``test`` or ``train``).
        statistic: ``mean``, ``median``, ``q10`` or ``q90``.

    Returns:
        DataFrame with columns ``run`` (None without a run column), ``epoch``, ``x``, ``y``, sorted by run
        and epoch; epochs missing either value are dropped.
    """
    func = "epoch_pairs"
    check_choice(statistic, STATISTICS, "statistic", func)
    check_choice(measure_split, ["test", "train"], "measure_split", func)
    check_choice(loss_split, ["test", "train"], "loss_split", func)
    col = f"{measure}_{statistic}"
    check_table(table, ["epoch", "split", col, loss], func)
    parts = []
    for run in runs_of(table):
        rows = rows_of_run(table, run)
        split = rows["split"].astype(str)
        x = rows[split == measure_split].groupby("epoch")[col].mean()
        y = rows[split == loss_split].groupby("epoch")[loss].mean()
        both = pd.concat({"x": x, "y": y}, axis=1).dropna().reset_index()
        both.insert(0, "run", run)
        parts.append(both)
    out = pd.concat(parts, ignore_index=True)
    return out[["run", "epoch", "x", "y"]]


def plot_measure_vs_loss(table: pd.DataFrame, measure: str = "curv_adv", *, loss: str = "loss_adv",
                         measure_split: str = "test", loss_split: str = "test", statistic: str = "mean",
                         since: int | Mapping | None = None, ax: Axes | None = None) -> Axes:
    """Scatter of a landscape measure against (robust) test loss, one point per epoch.

    Points are coloured by epoch (colour bar) and joined in epoch order; each run has its own marker and edge
    colour (runs ``<method>/<seed>`` share the method's colour, one shade and marker per seed), and its
    Spearman ρ over epochs (:func:`landscape.diagnose.spearman`, the function of the diagnosis) is in the
    legend below the axes (and the title, for a single run). A new figure grows with the legend, so the axes
    keep their size however many runs there are.

    Args:
        table, measure, loss, measure_split, loss_split, statistic: see :func:`epoch_pairs`.
        since: compute ρ over epochs >= this one only (an int for every run, or ``{run: epoch}``, e.g. each
            run's best epoch as in :func:`landscape.diagnose.diagnose`); earlier epochs are drawn faded.
            Default: all epochs.
        ax: axes to draw on (default: a new figure).

    Returns:
        The Axes.
    """
    pairs = epoch_pairs(table, measure, loss=loss, measure_split=measure_split, loss_split=loss_split,
                        statistic=statistic)
    if pairs.empty:
        raise ValueError(f"plot_measure_vs_loss: no epoch has both {measure}_{statistic} ({measure_split}) and "
                         f"{loss} ({loss_split})")
    runs = list(pd.unique(pairs["run"])) if pairs["run"].notna().any() else [None]
    norm = Normalize(pairs["epoch"].min(), max(pairs["epoch"].max(), pairs["epoch"].min() + 1))
    styles = run_styles(runs)
    rhos, drawn = {}, []
    for run in runs:  # ρ and legend text first: a new figure is sized to hold its legend
        part = pairs if run is None else pairs[pairs["run"] == run]
        part = part.sort_values("epoch")
        start = since.get(run) if isinstance(since, Mapping) else since
        used = part if start is None else part[part["epoch"] >= start]
        rho = rhos[run] = spearman(used["x"], used["y"])
        rho_text = "n/a" if np.isnan(rho) else f"{rho:.2f}"
        name = f"{run}: " if run is not None else ""
        span = "" if start is None else f"epochs ≥ {start}, "
        drawn.append((run, part, used, f"{name}Spearman ρ = {rho_text} ({span}n = {len(used)})"))
    ncols = 1 if len(runs) < 3 else 2
    with style():
        if ax is None:  # legend below the axes: widen and heighten the figure so that the axes keep their size
            longest = max(len(label) for *_, label in drawn)
            rows = -(-len(runs) // ncols)
            ax = new_axes(None, size=(max(5.0, ncols * (0.5 + 0.062 * longest) + 0.4), 3.8 + 0.19 * rows))
        ax = new_axes(ax)
        handles = []
        for run, part, used, label in drawn:
            color, marker = styles[run].color, styles[run].marker
            ax.plot(part["x"], part["y"], color=color, lw=0.8, alpha=0.5, zorder=1)
            early = part[~part.index.isin(used.index)]
            ax.scatter(early["x"], early["y"], c=early["epoch"], cmap=CMAP, norm=norm, s=22, marker=marker,
                       alpha=0.35, edgecolors=color, linewidths=0.6, zorder=2)
            ax.scatter(used["x"], used["y"], c=used["epoch"], cmap=CMAP, norm=norm, s=30, marker=marker,
                       edgecolors=color, linewidths=0.9, zorder=3)
            handles.append(Line2D([], [], marker=marker, ls="-", lw=0.8, ms=6, color=color, mfc="white",
                                  label=label))
        ax.figure.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=ax, label="epoch")
        ax.set_xlabel(f"{measure_label(measure)}, {measure_split} {statistic}")
        ax.set_ylabel(f"{'robust' if loss == 'loss_adv' else 'clean'} {loss_split} loss (CE, nats)")
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False,
                  ncols=ncols)  # below the axes: never over the points
        head = f"{measure_label(measure, units=False)} vs {loss_split} {'robust ' if loss == 'loss_adv' else ''}loss"
        if len(runs) == 1:
            rho = rhos[runs[0]]
            start = since.get(runs[0]) if isinstance(since, Mapping) else since
            head += f"\nSpearman ρ = {'n/a' if np.isnan(rho) else f'{rho:.2f}'}"
            head += f" (epochs ≥ {start})" if start is not None else ""
        ax.set_title(head)
    return ax


__all__ = ["epoch_pairs", "plot_measure_vs_loss"]
