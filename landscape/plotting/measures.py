"""Landscape measures against epoch: gradient norm, curvature, Taylor gap, logit variation."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ._style import SPLIT_STYLES, best_epoch_lines, new_figure, run_styles, style
from ._tables import MEASURE_UNITS, best_and_last, check_table, measure_label, of_run, rows_of_run, runs_of

#: The paper's four diagnostics, drawn by default when their ``*_mean`` columns exist.
PLOTTED_MEASURES = ("grad_l1", "curv_adv", "taylor_gap", "logit_var",
                    "w_eig_top", "w_trace", "w_flat_avg", "w_flat_worst", "w_awp_gap")  # w_*: when measured
_NOT_MEASURES = {"acc_clean", "acc_adv", "loss_clean", "loss_adv", "n", "epoch", "nonfinite"}


def available_measures(table: pd.DataFrame) -> list[str]:
    """Measures with a ``<m>_mean`` column in a trajectory table, defaults first."""
    found = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    found = [m for m in found if m not in _NOT_MEASURES]
    return [m for m in PLOTTED_MEASURES if m in found] + [m for m in found if m not in PLOTTED_MEASURES]


def plot_measures(table: pd.DataFrame, measures: Sequence[str] | None = None, *,
                  splits: Sequence[str] = ("test", "train"), band: bool | None = None, mark_best: bool = True,
                  title: str | None = None, colors: Mapping | None = None,
                  best_epochs: Mapping | None = None) -> Figure:
    """One panel per measure: its per-epoch mean (with the q10–q90 band over samples) for each run.

    Runs are overlaid in distinct colours (e.g. PGD-AT vs AT+AdvLC); runs of one method named
    ``<method>/<seed>`` (``pgd_at/s0``, ``pgd_at/s1``, ...) share the method's colour, one shade per seed,
    and the legend has one column per method (see :func:`landscape.plotting._style.run_styles`). Test is
    solid, train dashed. When the table has ``acc_adv``, each run's best epoch (maximum of robust test
    accuracy, the latest epoch on ties; or ``best_epochs[run]``, e.g. the diagnosis' from the training log) is a
    dotted line in the run's colour, so sharpening after the best epoch is visible; runs of one method
    (``<method>/<seed>``) get one line, at the median over its seeds of their best epochs.

    Args:
        table: trajectory table with ``epoch``, ``split`` and ``<m>_mean`` for each measure ``m``; optional
            ``<m>_q10``/``<m>_q90`` (band), ``run`` (overlaid), ``acc_adv`` (best-epoch mark).
        measures: measure names (``grad_l1``, ``curv_adv``, ``taylor_gap``, ``logit_var``, ``grad_l2``,
            ``eig_top``, ...). Default: those of :data:`PLOTTED_MEASURES` present, else every ``*_mean``.
        splits: which splits to draw, any of ``test``/``train``.
        band: shade the q10–q90 band where the quantile columns exist (around the first split drawn only).
            Default None: shade when at most 2 runs are overlaid, so more runs stay readable.
        mark_best: mark each run's best epoch.
        title: optional figure title.
        colors: ``{run: colour}`` for some or all runs, overriding the automatic ones (e.g. the report's
            per-method colours from :func:`landscape.plotting.methods.method_colors`, so figures agree).
        best_epochs: ``{run: best epoch}`` (e.g. from :func:`landscape.diagnose.run_diagnoses`), used instead
            of the table's ``acc_adv`` for the runs it names.

    Returns:
        The Figure (one panel per measure, up to 3 per row; 4 measures as 2 x 2).
    """
    func = "plot_measures"
    check_table(table, ["epoch", "split"], func)
    if colors is not None and not isinstance(colors, Mapping):
        raise TypeError(f"{func}: colors must be a mapping {{run: colour}}, got {type(colors).__name__}")
    if isinstance(measures, str):
        measures = [measures]
    if measures is None:
        measures = [m for m in available_measures(table) if m in PLOTTED_MEASURES] or available_measures(table)
        if not measures:
            raise ValueError(f"{func}: table has no '<measure>_mean' columns; columns are {list(table.columns)}")
    measures = list(measures)
    if not measures:
        raise ValueError(f"{func}: measures must name at least one measure")
    check_table(table, [f"{m}_mean" for m in measures], func)
    if isinstance(splits, str):
        splits = [splits]
    bad = [s for s in splits if s not in SPLIT_STYLES]
    if bad or not splits:
        raise ValueError(f"{func}: splits {list(splits)} not allowed; choose from {list(SPLIT_STYLES)}")
    present = [s for s in splits if (table["split"].astype(str) == s).any()]
    if not present:
        raise ValueError(f"{func}: no rows with split in {list(splits)}; "
                         f"table has {sorted(set(table['split'].astype(str)))}")
    runs = runs_of(table)
    styles = {r: st._replace(color=(colors or {}).get(r, st.color)) for r, st in run_styles(runs).items()}
    colors = {r: st.color for r, st in styles.items()}
    if band is None:
        band = len(runs) <= 2
    n = len(measures)
    ncols = 2 if n == 4 else min(n, 3)
    nrows = math.ceil(n / ncols)
    with style():
        fig, axes = new_figure(nrows, ncols, panel=(3.9, 2.8), sharex=True)
        flat = axes.ravel()
        best = {run: _given_or_own(best_epochs, run, table) for run in runs} if mark_best else {}
        best_lines = best_epoch_lines(best, styles)
        for ax, m in zip(flat, measures):
            for run in runs:
                rows = rows_of_run(table, run)
                for split in present:
                    part = rows[rows["split"].astype(str) == split].sort_values("epoch")
                    part = part.groupby("epoch", as_index=False).mean(numeric_only=True)
                    ax.plot(part["epoch"], part[f"{m}_mean"], color=colors[run], ls=SPLIT_STYLES[split])
                    lo, hi = f"{m}_q10", f"{m}_q90"
                    if band and split == present[0] and lo in part.columns and hi in part.columns:
                        ax.fill_between(part["epoch"], part[lo], part[hi], color=colors[run], alpha=0.12, lw=0)
            for epoch, color in best_lines:
                ax.axvline(epoch, color=color, ls=":", lw=1.2)
            ax.set_title(measure_label(m, units=False))
            ax.set_ylabel(MEASURE_UNITS.get(m, m))
        for ax in flat[n:]:
            ax.set_visible(False)
        for ax in flat[max(0, n - ncols):n]:  # bottom panel of each column
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("epoch")
        _legend(fig, runs, styles, present, band=band and any(f"{m}_q10" in table.columns for m in measures),
                best=bool(best_lines), per_method=len(best_lines) < sum(v is not None for v in best.values()))
        if title:
            fig.suptitle(title)
    return fig


_NOT_GIVEN = object()


def _given_or_own(best_epochs: Mapping | None, run, table: pd.DataFrame) -> int | None:
    """``best_epochs[run]`` when given (a table without runs takes the only value), else from ``acc_adv``."""
    given = of_run(best_epochs, run, _NOT_GIVEN)
    if given is not _NOT_GIVEN:
        return None if given is None else float(given)
    return _best_epoch(rows_of_run(table, run))


def _best_epoch(rows: pd.DataFrame) -> int | None:
    if "acc_adv" not in rows.columns:
        return None
    test = rows[rows["split"].astype(str) == "test"].groupby("epoch")["acc_adv"].mean()
    mark = best_and_last(test.index.to_numpy(), test.to_numpy(dtype=float))
    return None if mark is None else mark[0]


def _legend(fig: Figure, runs, styles, splits, *, band: bool, best: bool, per_method: bool = False) -> None:
    keys = [Line2D([], [], color="0.3", ls=SPLIT_STYLES[s], label=f"{s} (mean)") for s in splits]
    if band:
        keys.append(Patch(color="0.3", alpha=0.2, label=f"{splits[0]} q10–q90 over samples"))
    if best:
        keys.append(Line2D([], [], color="0.3", ls=":",
                           label="best epoch (median over seeds)" if per_method else "best epoch"))
    if runs == [None]:
        fig.legend(handles=keys, loc="outside lower center", ncols=len(keys), frameon=False)
        return
    line = {r: Line2D([], [], color=styles[r].color, lw=2, label=str(r)) for r in runs}
    groups: dict = {}
    for r in runs:
        groups.setdefault(styles[r].group, []).append(r)
    if None in groups or len(groups) > 6:  # no methods: runs then keys, wrapped into at most 6 columns
        handles = [line[r] for r in runs] + keys
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
        return
    # one column per method (its seeds top to bottom), then a column of the style keys; the legend fills
    # columns first, so pad every column to the same height with blank entries
    height = max(len(keys), *(len(m) for m in groups.values()))
    blank = Line2D([], [], ls="none", label=" ")
    handles = []
    for column in [[line[r] for r in members] for members in groups.values()] + [keys]:
        handles += column + [blank] * (height - len(column))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(groups) + 1, frameon=False)


__all__ = ["PLOTTED_MEASURES", "available_measures", "plot_measures"]
