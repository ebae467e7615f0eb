"""Per-sample distributions of a measure (gradient norm, curvature, ...) for chosen epochs, e.g. best vs last."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._style import colors_for, new_figure, style
from ._tables import MEASURE_UNITS, check_choice, check_table, default_group, group_name, measure_label, rows_of_run, runs_of

KINDS = ("hist", "violin")
#: Panels per row at most: a longer row wraps into blocks stacked below (e.g. 12 runs -> 3 rows of 4).
MAX_COLUMNS = 4


def plot_distributions(samples: pd.DataFrame, measures: Sequence[str] | str = ("grad_l1", "curv_adv"), *,
                       by: str | None = None, split: str | None = "test", kind: str = "hist", log: bool | str = False,
                       bins: int = 30, transpose: bool = False, title: str | None = None) -> Figure:
    """Histograms (density, one outline per group) or violins of per-sample measures, groups compared.

    Typical use compares the best and the last epoch: ``plot_distributions(label_epochs(samples, {"best": 12,
    "last": 30}))``. Each group's median is a dashed vertical line on the histograms.

    Args:
        samples: per-sample table (``landscape.measure`` / ``samples.parquet``) with the measure columns;
            optional ``split`` (filtered), ``run`` (one row of panels per run) and the grouping column.
        measures: measure column(s), one panel column each (``grad_l1``, ``curv_adv``, ``taylor_gap``, ...).
        by: grouping column (default: a text ``label`` column, else ``epoch``, else none).
        split: keep rows of this split when the table has a ``split`` column (None keeps all).
        kind: ``hist`` or ``violin``.
        log: logarithmic measure axis (non-positive values are dropped from that panel); ``"auto"``: per
            measure (its panels share x), log when every value is positive and they span more than two decades.
        bins: histogram bins.
        transpose: one row per measure and one column per run (compact for several runs or methods).
        title: optional figure title.

    Linear axes whose values are tiny or huge (below 1e-2 or from 1e4) are shown in units of a power of ten
    named in the axis label, e.g. "(× 1e-6)", instead of matplotlib's offset text that can hide the label.

    Returns:
        The Figure (rows: runs; columns: measures; swapped with ``transpose``); more than :data:`MAX_COLUMNS`
        columns wrap into blocks of that many, stacked below each other (panels of a measure share x).
    """
    func = "plot_distributions"
    check_choice(kind, KINDS, "kind", func)
    check_choice(log, [False, True, "auto"], "log", func)
    measures = [measures] if isinstance(measures, str) else list(measures)
    if not measures:
        raise ValueError(f"{func}: measures must name at least one column")
    check_table(samples, measures, func)
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"{func}: bins must be an integer >= 2, got {bins!r}")
    data = samples
    if split is not None and "split" in data.columns:
        data = data[data["split"].astype(str) == split]
        if data.empty:
            raise ValueError(f"{func}: no rows with split={split!r}; "
                             f"table has {sorted(set(samples['split'].astype(str)))}")
    by = default_group(data, by, func)
    groups = list(pd.unique(data[by])) if by else [None]
    if by == "epoch":
        groups = sorted(groups)
    colors = colors_for(groups)
    names = {g: group_name(by, g) for g in groups}
    runs = runs_of(data)
    with style():
        across, down = (runs, measures) if transpose else (measures, runs)  # along a row, along a column
        ncols = min(len(across), MAX_COLUMNS)
        blocks = -(-len(across) // ncols)
        fig, axes = new_figure(len(down) * blocks, ncols, panel=(3.9, 3.1 if transpose else 2.9))

        def place(i: int, j: int):
            """The panel of run ``i`` and measure ``j``."""
            a, d = (i, j) if transpose else (j, i)
            block, col = divmod(a, ncols)
            return axes[block * len(down) + d, col]

        for ax in axes.ravel():  # shown as they are drawn: the last block's unused slots stay hidden
            ax.set_visible(False)
        first: dict = {}
        # one scale per measure: its panels share x, so "auto" decides on all of the measure's values
        log_of = {m: _auto_log(pd.to_numeric(data[m], errors="coerce").pipe(lambda v: v[np.isfinite(v)]))
                  if log == "auto" else bool(log) for m in measures}
        for i, run in enumerate(runs):
            rows = rows_of_run(data, run)
            for j, m in enumerate(measures):
                ax = place(i, j)
                ax.set_visible(True)
                if m in first:
                    ax.sharex(first[m])
                first.setdefault(m, ax)
                frame = pd.DataFrame({"v": pd.to_numeric(rows[m], errors="coerce"),
                                      "g": [names[g] for g in rows[by]] if by else names[None]})
                frame = frame[np.isfinite(frame["v"])]
                use_log = log_of[m]
                if use_log:
                    frame = frame[frame["v"] > 0]
                power = 0 if use_log else _power_of_ten(frame["v"], data[m])
                frame["v"] = frame["v"] / 10.0 ** power
                unit = f" (× 1e{power})" if power else ""
                palette = {names[g]: colors[g] for g in groups}
                order = [names[g] for g in groups if names[g] in set(frame["g"])]
                if frame.empty:
                    ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
                elif kind == "hist":
                    sns.histplot(frame, x="v", hue="g", hue_order=order, palette=palette, stat="density",
                                 common_norm=False, element="step", fill=True, alpha=0.2, bins=bins,
                                 log_scale=use_log, legend=False, ax=ax)
                    for name in order:
                        ax.axvline(frame.loc[frame["g"] == name, "v"].median(), color=palette[name], ls="--",
                                   lw=1.3)
                    ax.set_ylabel("density")
                else:
                    sns.violinplot(frame, x="g", y="v", hue="g", order=order, hue_order=order, palette=palette,
                                   cut=0, inner="quart", log_scale=use_log, legend=False, ax=ax)
                    ax.set_xlabel("epoch" if by == "epoch_label" else (by or ""))
                    ax.set_ylabel(MEASURE_UNITS.get(m, m) + (" (log scale)" if use_log else unit))
                if kind == "hist":
                    ax.set_xlabel(measure_label(m) + unit)
                # the run on a line of its own: long run names would run into the next panel's title
                head = measure_label(m, units=False) + (f"\n{run}" if run is not None else "")
                ax.set_title(head + (f" ({split})" if split is not None and "split" in samples.columns else ""))
        if kind == "hist" and by:
            handles = [Line2D([], [], color=colors[g], lw=2, label=names[g]) for g in groups]
            handles.append(Line2D([], [], color="0.3", ls="--", label="median"))
            fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
        if title:
            fig.suptitle(title)
    return fig


def _power_of_ten(values: pd.Series, column: pd.Series) -> int:
    """The power of ten to divide a linear axis by: 0 unless the column's largest |value| is below 1e-2 or
    at least 1e4 (the same for every panel of a measure, so shared axes stay comparable)."""
    every = pd.to_numeric(column, errors="coerce").abs()
    top = float(every[np.isfinite(every)].max()) if np.isfinite(every).any() else 0.0
    if values.empty or top == 0 or 1e-2 <= top < 1e4:
        return 0
    return int(np.floor(np.log10(top)))


def _auto_log(values: pd.Series) -> bool:
    """True when all values are positive and span more than two decades (a heavy right tail)."""
    if values.empty or (values <= 0).any():
        return False
    return float(values.max() / values.min()) > 100.0


__all__ = ["plot_distributions"]
