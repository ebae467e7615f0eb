"""Methods compared: per-epoch curves averaged over seeds with a seed band, and per-method pooled views.

Runs named ``<method>/<seed>`` (``pgd_at/s0``, ``pgd_at/s1``, ...) belong to the method before the last ``/``
(:func:`landscape.plotting._style.run_group`); a run without a ``/`` is a method of its own.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ._style import _GROUP_ORDER, PALETTE, SPLIT_STYLES, new_figure, run_group, style
from ._tables import accuracy_scale, best_and_last, check_table, measure_label, MEASURE_UNITS

#: Columns of :func:`plot_method_curves` by default, with their axis labels.
CURVE_COLUMNS = {"acc_adv": "robust accuracy (%)", "acc_clean": "clean accuracy (%)",
                 "loss_adv": "robust loss (CE, nats)"}


def method_of(run) -> str:
    """The method of a run: the name before its last ``/``, else the run name itself."""
    return run_group(run) or str(run)


def with_method(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``method`` column derived from ``run`` (the whole table is one method without it).

    Runs named by their paths (``runs/demo/pgd_at/s0``, as :func:`landscape.runs.load_tables` names runs whose
    folder names collide) lose the leading folders the methods share (-> ``pgd_at``)."""
    out = table.copy()
    if "run" not in out.columns:
        out["method"] = "all"
        return out
    methods = [method_of(r) for r in out["run"]]
    unique = list(dict.fromkeys(methods))
    if len(unique) > 1 and all("/" in m for m in unique):
        head = os.path.commonpath(unique)
        if head and head not in unique:
            methods = [os.path.relpath(m, head) for m in methods]
    out["method"] = methods
    return out


def pool_by_method(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of every seed of a method pooled: ``run`` replaced by the method name (per-sample views)."""
    out = with_method(table)
    out["run"] = out.pop("method")
    out.attrs = dict(table.attrs)
    return out


def method_colors(methods: Sequence[str]) -> dict:
    """One colour per method, in the order run_styles gives them (so the two figure kinds agree)."""
    order = [PALETTE[i] for i in _GROUP_ORDER]
    return {m: order[i % len(order)] for i, m in enumerate(methods)}


def seed_summary(table: pd.DataFrame, columns: Sequence[str], *, splits: Sequence[str] = ("test",)) -> pd.DataFrame:
    """Per (method, split, epoch, column): mean, min and max over the method's runs (seeds).

    Args:
        table: trajectory-like table (``epoch``, ``split``, the columns; ``run`` names the seeds).
        columns: numeric columns to summarise.
        splits: splits kept.

    Returns:
        Long DataFrame with columns ``method``, ``split``, ``epoch``, ``column``, ``mean``, ``lo``, ``hi``,
        ``seeds`` (runs with a value at that epoch), in order of first appearance of the methods.
    """
    check_table(table, ["epoch", "split", *columns], "seed_summary")
    data = with_method(table)
    data = data[data["split"].astype(str).isin(list(splits))]
    if "run" not in data.columns:
        data["run"] = "run"
    parts = []
    for col in columns:
        per_run = (data.assign(v=pd.to_numeric(data[col], errors="coerce"))
                   .groupby(["method", "split", "epoch", "run"], sort=False)["v"].mean().dropna().reset_index())
        g = per_run.groupby(["method", "split", "epoch"], sort=False)["v"]
        stats = pd.DataFrame({"mean": g.mean(), "lo": g.min(), "hi": g.max(), "seeds": g.size()}).reset_index()
        stats.insert(3, "column", col)
        parts.append(stats)
    out = pd.concat(parts, ignore_index=True)
    order = {m: i for i, m in enumerate(pd.unique(data["method"]))}
    return out.sort_values(["method", "column", "split", "epoch"], key=lambda s: s.map(order) if s.name == "method"
                           else s, kind="stable").reset_index(drop=True)


def plot_method_curves(table: pd.DataFrame, columns: Sequence[str] | None = None, *,
                       splits: Sequence[str] = ("test",), title: str | None = None) -> Figure:
    """Learning curves per method: the mean over seeds with the seeds' min–max band, one panel per column.

    Each method's best epoch (highest mean robust test accuracy, the latest epoch on ties) is starred on the robust
    accuracy panel.

    Args:
        table: trajectory table (``epoch``, ``split``, ``acc_adv``, ...; ``run`` = ``<method>/<seed>``).
        columns: default ``acc_adv``, ``acc_clean``, ``loss_adv`` (those present).
        splits: splits drawn (test solid, train dashed).
        title: optional figure title.

    Returns:
        The Figure (one row of panels).
    """
    columns = list(columns) if columns is not None else [c for c in CURVE_COLUMNS if c in table.columns]
    labels = {c: CURVE_COLUMNS.get(c, c.replace("_", " ")) for c in columns}
    scale = {c: (accuracy_scale(table, [c]) if c.startswith("acc") else 1.0) for c in columns}
    return _plot_summary(table, columns, labels, scale, splits, title, "plot_method_curves", star="acc_adv")


def plot_method_measures(table: pd.DataFrame, measures: Sequence[str] | None = None, *,
                         splits: Sequence[str] = ("test",), title: str | None = None) -> Figure:
    """Landscape measures per method (``<m>_mean`` per epoch): mean over seeds with the seeds' min–max band.

    Args:
        table: trajectory table with ``<m>_mean`` columns; ``run`` = ``<method>/<seed>``.
        measures: default: those of :data:`landscape.plotting.PLOTTED_MEASURES` present, else every one.
        splits, title: as :func:`plot_method_curves`.
    """
    measures = chosen_measures(table, measures, "plot_method_measures")
    columns = [f"{m}_mean" for m in measures]
    labels = {f"{m}_mean": f"{measure_label(m, units=False)}\n({MEASURE_UNITS.get(m, '')})" for m in measures}
    return _plot_summary(table, columns, labels, {c: 1.0 for c in columns}, splits, title,
                         "plot_method_measures")


def _plot_summary(table, columns, labels, scale, splits, title, func, star=None) -> Figure:
    if not columns:
        raise ValueError(f"{func}: no columns to draw")
    splits = [splits] if isinstance(splits, str) else list(splits)
    bad = [s for s in splits if s not in SPLIT_STYLES]
    if bad or not splits:
        raise ValueError(f"{func}: splits {splits} not allowed; choose from {list(SPLIT_STYLES)}")
    summary = seed_summary(table, columns, splits=splits)
    if summary.empty:
        raise ValueError(f"{func}: no rows with split in {splits}")
    methods = list(pd.unique(summary["method"]))
    colors = method_colors(methods)
    n = len(columns)
    ncols = min(n, 3) if n != 4 else 2
    nrows = math.ceil(n / ncols)
    with style():
        fig, axes = new_figure(nrows, ncols, panel=(3.7, 2.7), sharex=True)
        flat = axes.ravel()
        for ax, col in zip(flat, columns):
            for m in methods:
                for split in splits:
                    part = summary[(summary["method"] == m) & (summary["column"] == col)
                                   & (summary["split"] == split)]
                    if part.empty:
                        continue
                    k = scale[col]
                    ax.plot(part["epoch"], part["mean"] * k, color=colors[m], ls=SPLIT_STYLES[split])
                    if (part["seeds"] > 1).any():
                        ax.fill_between(part["epoch"], part["lo"] * k, part["hi"] * k, color=colors[m],
                                        alpha=0.18, lw=0)
                    if col == star and split == "test":
                        mark = best_and_last(part["epoch"].to_numpy(), part["mean"].to_numpy() * k)
                        if mark is not None:
                            ax.plot([mark[0]], [mark[1]], marker="*", ms=10, color=colors[m], mec="black",
                                    mew=0.5, zorder=5)
            ax.set_title(labels[col].split("\n")[0].split(" (")[0])
            ax.set_ylabel(labels[col].split("\n")[-1] if "\n" in labels[col] else labels[col])
        for ax in flat[n:]:
            ax.set_visible(False)
        for ax in flat[max(0, n - ncols):n]:
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("epoch")
        seeds = int(summary.groupby("method")["seeds"].max().max())
        handles = [Line2D([], [], color=colors[m], lw=2, label=m) for m in methods]
        handles += [Line2D([], [], color="0.3", ls=SPLIT_STYLES[s], label=s) for s in splits if len(splits) > 1]
        if seeds > 1:
            handles.append(Patch(color="0.3", alpha=0.25, label="min–max over seeds (line: mean)"))
        if star in columns:
            handles.append(Line2D([], [], color="0.3", marker="*", ls="none", ms=9, label="best epoch (mean)"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
        if title:
            fig.suptitle(title)
    return fig


__all__ = ["CURVE_COLUMNS", "method_colors", "method_of", "plot_method_curves",
           "plot_method_measures", "pool_by_method", "seed_summary", "with_method"]


def chosen_measures(table: pd.DataFrame, measures, func: str) -> list[str]:
    """The measures a per-method figure draws: ``measures`` (a name or names), else the table's default ones
    (else all it has); ValueError naming ``func`` when there are none."""
    from .measures import PLOTTED_MEASURES, available_measures

    if measures is None:
        found = available_measures(table)
        measures = [m for m in found if m in PLOTTED_MEASURES] or found
    measures = [measures] if isinstance(measures, str) else list(measures)
    if not measures:
        raise ValueError(f"{func}: the table has no '<measure>_mean' columns")
    return measures
