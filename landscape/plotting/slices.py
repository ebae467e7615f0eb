"""Loss along 1D slices (adversarial vs random directions) and 2D loss surfaces (contour and 3D)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ._style import CMAP, colors_for, new_axes, new_figure, style
from ._tables import check_choice, check_table, default_group, group_name, rows_of_run, runs_of

#: Value columns of the slice tables and their axis labels.
VALUES = {"loss": "cross-entropy loss (nats)", "margin": "logit margin (true − best other)",
          "correct": "accuracy along slice (%)"}
BANDS = ("std", "quantile", None)


def _position_label(direction: str, coord: str, attrs: dict) -> str:
    norm = attrs.get("normalization") if isinstance(attrs, dict) else None
    suffix = {"linf": " (‖d‖∞ = 1)", "unit": " (‖d‖₂ = 1)"}.get(norm, "")
    return f"{coord}: step along {direction} direction{suffix}"


def _values(rows: pd.DataFrame, value: str) -> pd.Series:
    v = pd.to_numeric(rows[value], errors="coerce").astype(float)
    return v * 100.0 if value == "correct" else v


def plot_slices_1d(table: pd.DataFrame, *, by: str | None = None, directions: Sequence[str] | None = None,
                   value: str = "loss", band: str | None = "quantile", title: str | None = None) -> Figure:
    """Median loss with its q10–q90 band over samples (or mean ± std) along each 1D direction, groups (e.g. best vs last)
    overlaid.

    Args:
        table: 1D slice table with ``sample``, ``direction``, ``a`` and ``value``; optional grouping column
            (``by``) and ``run`` (one row of panels per run).
        by: column whose values are overlaid in colour. Default: a text ``label`` column (e.g. "best"/"last",
            see :func:`landscape.plotting.label_epochs`) if present, else ``epoch``, else none.
        directions: which directions to show, one panel each (default: all, in order of appearance).
        value: ``loss`` (nats), ``margin`` (logits) or ``correct`` (shown as accuracy in %).
        band: ``quantile`` (q10–q90 over samples, the default: a loss band never goes below zero), ``std``
            (mean ± one standard deviation) or None.
        title: optional figure title.

    Returns:
        The Figure (columns: directions; rows: runs; y shared by all panels). a = 0 is the clean input.
    """
    func = "plot_slices_1d"
    check_choice(value, list(VALUES), "value", func)
    check_choice(band, BANDS, "band", func)
    check_table(table, ["sample", "direction", "a", value], func)
    by = default_group(table, by, func)
    all_dirs = list(pd.unique(table["direction"].astype(str)))
    if directions is None:
        directions = all_dirs
    directions = [directions] if isinstance(directions, str) else list(directions)
    missing = [d for d in directions if d not in all_dirs]
    if missing or not directions:
        raise ValueError(f"{func}: direction(s) {missing or directions} not in the table; it has {all_dirs}")
    groups = list(pd.unique(table[by])) if by else [None]
    if by == "epoch":
        groups = sorted(groups)
    colors = colors_for(groups)
    runs = runs_of(table)
    with style():
        fig, axes = new_figure(len(runs), len(directions), panel=(3.9, 3.0), sharex=True, sharey=True)
        for i, run in enumerate(runs):
            rows_run = rows_of_run(table, run)
            for j, direction in enumerate(directions):
                ax = axes[i, j]
                rows_dir = rows_run[rows_run["direction"].astype(str) == direction]
                for g in groups:
                    rows = rows_dir if g is None else rows_dir[rows_dir[by] == g]
                    if rows.empty:
                        continue
                    stats = _stats(rows, value)
                    centre = "median" if band == "quantile" else "mean"  # the centre of its band
                    ax.plot(stats.index, stats[centre], color=colors[g], label=group_name(by, g))
                    if band is not None:
                        lo, hi = ("lo_std", "hi_std") if band == "std" else ("q10", "q90")
                        ax.fill_between(stats.index, stats[lo], stats[hi], color=colors[g], alpha=0.18, lw=0)
                ax.axvline(0.0, color="0.35", ls=":", lw=1.0)
                head = f"{direction} direction" + (f" — {run}" if run is not None else "")
                ax.set_title(head)
                if i == len(runs) - 1:
                    ax.set_xlabel(_position_label(direction, "a", table.attrs))
            axes[i, 0].set_ylabel(VALUES[value])
        handles = [Line2D([], [], color=colors[g], lw=2, label=group_name(by, g)) for g in groups if g is not None]
        if band is not None:
            handles.append(Patch(color="0.3", alpha=0.25,
                                 label="mean ± 1 std over samples" if band == "std"
                                 else "median, q10–q90 over samples"))
        handles.append(Line2D([], [], color="0.35", ls=":", label="clean input (a = 0)"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), frameon=False)
        if title:
            fig.suptitle(title)
    return fig


def _stats(rows: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per position ``a``: mean, median, mean ± std and q10/q90 of ``value`` over samples."""
    data = pd.DataFrame({"a": pd.to_numeric(rows["a"]), "v": _values(rows, value)})
    g = data.groupby("a")["v"]
    out = pd.DataFrame({"mean": g.mean(), "median": g.median(), "std": g.std(ddof=0).fillna(0.0),
                        "q10": g.quantile(0.1),
                        "q90": g.quantile(0.9)}).sort_index()
    out["lo_std"], out["hi_std"] = out["mean"] - out["std"], out["mean"] + out["std"]
    return out


def surface_grid(table: pd.DataFrame, *, sample=None, value: str = "loss"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (a, b) grid of one sample (or the mean over samples) of a 2D slice table.

    Args:
        table: 2D slice table (``sample``, ``a``, ``b``, ``value``) for one pair of directions and one group.
        sample: a sample id, ``"mean"`` (average over samples per grid point) or None (the first sample).
        value: ``loss``, ``margin`` or ``correct``.

    Returns:
        ``(A, B, Z)`` each (len(b), len(a)), with Z NaN where the table has no row.

    Raises:
        ValueError: the sample is absent, or a sample has several rows per (a, b) (filter the table to one
            epoch/run/direction pair first).
    """
    func = "surface_grid"
    check_choice(value, list(VALUES), "value", func)
    check_table(table, ["sample", "a", "b", value], func)
    if sample is None:
        sample = sorted(pd.unique(table["sample"]))[0]
    if isinstance(sample, str) and sample == "mean":
        rows = table
    else:
        rows = table[table["sample"] == sample]
        if rows.empty:
            raise ValueError(f"{func}: sample {sample!r} not in the table; samples are "
                             f"{sorted(pd.unique(table['sample']).tolist())[:20]}")
    if isinstance(sample, str) and sample == "mean":
        dup = rows.duplicated(["sample", "a", "b"]).any()
    else:
        dup = rows.duplicated(["a", "b"]).any()
    if dup:
        raise ValueError(f"{func}: several rows per (a, b) for sample {sample!r}; filter the table to one "
                         "epoch/run/direction pair first")
    data = pd.DataFrame({"a": rows["a"].astype(float), "b": rows["b"].astype(float), "v": _values(rows, value)})
    grid = data.pivot_table(index="b", columns="a", values="v", aggfunc="mean", dropna=False).sort_index()
    grid = grid.reindex(sorted(grid.columns), axis=1)
    A, B = np.meshgrid(grid.columns.to_numpy(float), grid.index.to_numpy(float))
    return A, B, grid.to_numpy(float)


def _direction_names(table: pd.DataFrame) -> tuple[str, str]:
    d1 = str(table["direction1"].iloc[0]) if "direction1" in table.columns else "first"
    d2 = str(table["direction2"].iloc[0]) if "direction2" in table.columns else "second"
    return d1, d2


def plot_contour(table: pd.DataFrame, *, sample=None, value: str = "loss", levels: int = 15,
                 norm: Normalize | None = None, colorbar: bool = True, ax: Axes | None = None) -> Axes:
    """Filled contour of a 2D slice around one sample (or the sample mean), the clean input marked.

    Args:
        table: 2D slice table of one group (see :func:`surface_grid`); ``direction1``/``direction2`` name the
            axes when present.
        sample, value: see :func:`surface_grid`.
        levels: about how many contour levels (rounded to nice values).
        norm: colour normalisation (share one between panels to compare them).
        colorbar: draw a colour bar next to the axes.
        ax: axes to draw on (default: a new figure).

    Returns:
        The Axes.
    """
    A, B, Z = surface_grid(table, sample=sample, value=value)
    d1, d2 = _direction_names(table)
    with style():
        ax = new_axes(ax, size=(4.4, 3.6))
        if A.shape[0] < 2 or A.shape[1] < 2:
            raise ValueError(f"plot_contour: need at least a 2 x 2 grid, got {A.shape[1]} x {A.shape[0]}")
        norm = norm or Normalize(np.nanmin(Z), np.nanmax(Z))
        ticks = MaxNLocator(levels).tick_values(norm.vmin, norm.vmax)
        cs = ax.contourf(A, B, Z, levels=ticks, cmap=CMAP, norm=norm, extend="both")
        ax.contour(A, B, Z, levels=cs.levels, colors="white", linewidths=0.4, alpha=0.5)
        ax.plot([0], [0], marker="*", ms=12, color="white", mec="black", mew=0.7, ls="none")
        ax.set_xlabel(_position_label(d1, "a", table.attrs))
        ax.set_ylabel(_position_label(d2, "b", table.attrs))
        ax.set_aspect("equal", adjustable="box")
        ax.grid(False)
        if colorbar:
            ax.figure.colorbar(cs, ax=ax, label=VALUES[value], shrink=0.9)
    return ax


def plot_surface_3d(table: pd.DataFrame, *, sample=None, value: str = "loss", norm: Normalize | None = None,
                    ax: Axes | None = None) -> Axes:
    """3D surface of a 2D slice around one sample (or the sample mean).

    Args: as :func:`plot_contour`; ``ax`` must be a 3D axes (``projection="3d"``) when given.

    Returns:
        The 3D Axes.
    """
    A, B, Z = surface_grid(table, sample=sample, value=value)
    d1, d2 = _direction_names(table)
    with style():
        ax = new_axes(ax, size=(4.6, 3.8), projection="3d")
        if ax.name != "3d":
            raise TypeError(f"plot_surface_3d: ax must be a 3D axes (projection='3d'), got {ax.name!r}")
        norm = norm or Normalize(np.nanmin(Z), np.nanmax(Z))
        ax.plot_surface(A, B, Z, cmap=CMAP, norm=norm, linewidth=0, antialiased=True, rcount=60, ccount=60)
        if norm.vmax > norm.vmin:
            ax.set_zlim(norm.vmin, norm.vmax)  # a shared norm gives comparable heights across panels
        ax.set_xlabel(f"a ({d1})", labelpad=2)
        ax.set_ylabel(f"b ({d2})", labelpad=2)
        ax.set_zlabel(VALUES[value].split(" (")[0], labelpad=2)
        ax.tick_params(pad=0)
        ax.view_init(elev=28, azim=-60)
    return ax


def plot_surface(table: pd.DataFrame, *, sample=None, by: str | None = None, kind: str = "both",
                 value: str = "loss", levels: int = 15, title: str | None = None) -> Figure:
    """2D loss surface around a sample as filled contour and/or 3D surface, one column per group.

    Args:
        table: 2D slice table with ``sample``, ``a``, ``b``, ``value`` (and ``direction1``/``direction2``);
            only the first direction pair is drawn. Groups (e.g. best vs last epoch) share one colour scale.
        sample: a sample id, ``"mean"`` or None (the first sample).
        by: grouping column (default: a text ``label`` column, else ``epoch``, else none); with a ``run``
            column the groups are (run, group) pairs.
        kind: ``both`` (contour row above 3D row), ``contour`` or ``3d``.
        value: ``loss``, ``margin`` or ``correct``.
        levels: number of contour levels.
        title: optional figure title.

    Returns:
        The Figure.
    """
    func = "plot_surface"
    check_choice(kind, ["both", "contour", "3d"], "kind", func)
    check_choice(value, list(VALUES), "value", func)
    check_table(table, ["sample", "a", "b", value], func)
    if "direction1" in table.columns and "direction2" in table.columns:
        pair = table[["direction1", "direction2"]].astype(str).iloc[0]
        table = table[(table["direction1"].astype(str) == pair.iloc[0])
                      & (table["direction2"].astype(str) == pair.iloc[1])]
    by = default_group(table, by, func)
    panels = []
    for run in runs_of(table):
        rows = rows_of_run(table, run)
        groups = list(pd.unique(rows[by])) if by else [None]
        if by == "epoch":
            groups = sorted(groups)
        for g in groups:
            part = rows if g is None else rows[rows[by] == g]
            name = " — ".join(s for s in (str(run) if run is not None else "", group_name(by, g) if g is not None
                                          else "") if s)
            panels.append((name or "loss surface", part))
    grids = [surface_grid(p, sample=sample, value=value)[2] for _, p in panels]
    norm = Normalize(min(np.nanmin(z) for z in grids), max(np.nanmax(z) for z in grids))
    kinds = ["contour", "3d"] if kind == "both" else [kind]
    with style():
        fig = Figure(figsize=(4.2 * len(panels) + 0.8, 3.7 * len(kinds)), layout="constrained")
        first = sorted(pd.unique(table["sample"]))[0]
        sample_text = "mean over samples" if isinstance(sample, str) else f"sample {first if sample is None else sample}"
        for j, (name, part) in enumerate(panels):
            for i, k in enumerate(kinds):
                if k == "contour":
                    ax = fig.add_subplot(len(kinds), len(panels), i * len(panels) + j + 1)
                    plot_contour(part, sample=sample, value=value, levels=levels, norm=norm,
                                 colorbar=j == len(panels) - 1, ax=ax)
                    if j > 0:
                        ax.set_ylabel("")
                else:
                    ax = fig.add_subplot(len(kinds), len(panels), i * len(panels) + j + 1, projection="3d")
                    plot_surface_3d(part, sample=sample, value=value, norm=norm, ax=ax)
                if i == 0:
                    ax.set_title(f"{name} ({sample_text})")
        if title:
            fig.suptitle(title)
    return fig


__all__ = ["plot_contour", "plot_slices_1d", "plot_surface", "plot_surface_3d", "surface_grid"]
