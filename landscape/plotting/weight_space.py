"""Figures of the weight loss landscape: 1D weight slices (clean vs robust), 2D contours, the PCA training path
on its loss surface, and the Hessian spectral density. Tables in (:mod:`landscape.weight_slices` and the
weight-space measures), Axes out; nothing is shown or saved."""
from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ._style import CMAP, PALETTE, colors_for, new_axes, new_figure, style
from ._tables import (check_choice, check_table, default_group, group_name, of_run, rows_of_run,
                      runs_of)

#: Value columns of the weight-slice tables and their axis labels.
VALUES = {"loss": "mean cross-entropy loss (nats)", "acc": "accuracy (%)"}
#: Colour per loss kind.
KIND_COLORS = {"clean": PALETTE[0], "robust": PALETTE[1]}
_DASHES = ["-", "--", ":", "-."]


def _v(rows: pd.DataFrame, value: str) -> np.ndarray:
    v = pd.to_numeric(rows[value], errors="coerce").to_numpy(float)
    return v * 100.0 if value == "acc" else v


def _step_label(coord: str, direction: str, attrs: dict) -> str:
    norm = attrs.get("norm") if isinstance(attrs, dict) else None
    how = {"filter": ", filter-normalised", "unit": ", ‖d‖₂ = 1"}.get(norm, "") if direction == "random" else ""
    return f"{coord}: step along the {direction} direction{how}"


def plot_weight_slice_1d(table: pd.DataFrame, *, value: str = "loss", title: str | None = None,
                         ax: Axes | None = None) -> Axes:
    """Loss (or accuracy) along 1D weight slices: clean and robust in two colours, directions by line style.

    Args:
        table: :func:`landscape.weight_slices.weight_slice_1d` rows (``direction``, ``alpha``, ``kind``,
            ``value``); several tables concatenated draw several directions.
        value: ``loss`` or ``acc`` (in %).
        title: axes title (default: names the probe size when ``attrs`` has it).
        ax: axes to draw on (default: a new figure).

    Returns:
        The Axes; alpha = 0 (dotted) is the checkpoint's own weights.
    """
    func = "plot_weight_slice_1d"
    check_choice(value, list(VALUES), "value", func)
    check_table(table, ["direction", "alpha", "kind", value], func)
    directions = list(pd.unique(table["direction"].astype(str)))
    kinds = [k for k in ("clean", "robust") if k in set(table["kind"].astype(str))]
    with style():
        ax = new_axes(ax, size=(4.8, 3.4))
        for i, d in enumerate(directions):
            for k in kinds:
                rows = table[(table["direction"].astype(str) == d) & (table["kind"].astype(str) == k)]
                rows = rows.sort_values("alpha")
                ax.plot(rows["alpha"].to_numpy(float), _v(rows, value), color=KIND_COLORS[k],
                        ls=_DASHES[i % len(_DASHES)], marker="o" if len(rows) <= 15 else None, ms=3)
        ax.axvline(0.0, color="0.35", ls=":", lw=1.0)
        ax.set_xlabel(_step_label("α", directions[0], table.attrs) if len(directions) == 1
                      else "α: step along each direction")
        ax.set_ylabel(VALUES[value])
        handles = [Line2D([], [], color=KIND_COLORS[k], lw=2, label=f"{k} loss" if value == "loss" else k)
                   for k in kinds]
        if len(directions) > 1:
            handles += [Line2D([], [], color="0.3", ls=_DASHES[i % len(_DASHES)], label=f"{d} direction")
                        for i, d in enumerate(directions)]
        ax.legend(handles=handles, frameon=False)
        n = table.attrs.get("n") if isinstance(table.attrs, dict) else None
        ax.set_title(title or "1D weight slice" + (f" ({n} probe samples)" if n else ""))
    return ax


def _grid(table: pd.DataFrame, kind: str, value: str, x: str = "alpha", y: str = "beta"):
    rows = table[table["kind"].astype(str) == kind]
    if rows.empty:
        raise ValueError(f"no rows of kind {kind!r}; the table has {sorted(table['kind'].astype(str).unique())}")
    if rows.duplicated([x, y]).any():
        raise ValueError("several rows per (alpha, beta): filter the table to one direction pair first")
    data = pd.DataFrame({"a": rows[x].astype(float), "b": rows[y].astype(float), "v": _v(rows, value)})
    grid = data.pivot_table(index="b", columns="a", values="v", dropna=False).sort_index()
    grid = grid.reindex(sorted(grid.columns), axis=1)
    if grid.shape[0] < 2 or grid.shape[1] < 2:
        raise ValueError(f"need at least a 2 x 2 grid, got {grid.shape[1]} x {grid.shape[0]}")
    A, B = np.meshgrid(grid.columns.to_numpy(float), grid.index.to_numpy(float))
    return A, B, grid.to_numpy(float)


def _contour(ax, A, B, Z, levels, log: bool | str, value: str, colorbar: bool):
    norm = Normalize(np.nanmin(Z), np.nanmax(Z))
    if log == "auto":  # a surface spanning decades shows its basin only on a log scale
        log = value == "loss" and norm.vmin > 0 and norm.vmax / norm.vmin > 20
    shown = np.log10(np.maximum(Z, 1e-12)) if log else Z
    lo, hi = (np.log10(max(norm.vmin, 1e-12)), np.log10(max(norm.vmax, 1e-12))) if log else (norm.vmin, norm.vmax)
    ticks = MaxNLocator(levels).tick_values(lo, hi) if hi > lo else np.array([lo - 1e-9, hi + 1e-9])
    cs = ax.contourf(A, B, shown, levels=ticks, cmap=CMAP, extend="both")
    ax.contour(A, B, shown, levels=cs.levels, colors="white", linewidths=0.4, alpha=0.5,
               negative_linestyles="solid")
    if colorbar:
        label = VALUES[value] if not log else f"log₁₀ {VALUES[value]}"
        ax.figure.colorbar(cs, ax=ax, label=label, shrink=0.9)
    ax.grid(False)


def _kind(table: pd.DataFrame, kind: str | None) -> str:
    return kind if kind is not None else str(table["kind"].iloc[0])


def plot_weight_contour(table: pd.DataFrame, *, kind: str | None = None, value: str = "loss", levels: int = 15,
                        log: bool | str = "auto", colorbar: bool = True, title: str | None = None,
                        ax: Axes | None = None) -> Axes:
    """Filled contour of a 2D weight slice, the checkpoint's weights (α = β = 0) starred.

    Args:
        table: :func:`landscape.weight_slices.weight_slice_2d` rows of one direction pair.
        kind: ``clean`` or ``robust`` (default: the first kind in the table).
        value: ``loss`` or ``acc``.
        levels: about how many contour levels.
        log: colour by log₁₀ of the loss; ``"auto"`` (default) when it spans more than a factor of 20 (loss
            surfaces span decades far from the centre, and a linear scale shows the basin as one colour).
        colorbar, title, ax: as usual.

    Returns:
        The Axes.
    """
    func = "plot_weight_contour"
    check_choice(value, list(VALUES), "value", func)
    check_table(table, ["alpha", "beta", "kind", value], func)
    kind = _kind(table, kind)
    A, B, Z = _grid(table, kind, value)
    d1 = str(table["direction1"].iloc[0]) if "direction1" in table.columns else "first"
    d2 = str(table["direction2"].iloc[0]) if "direction2" in table.columns else "second"
    with style():
        ax = new_axes(ax, size=(4.6, 3.8))
        _contour(ax, A, B, Z, levels, log, value, colorbar)
        ax.plot([0], [0], marker="*", ms=12, color="white", mec="black", mew=0.7, ls="none")
        ax.set_xlabel(_step_label("α", d1, table.attrs))
        ax.set_ylabel(_step_label("β", d2, table.attrs))
        ax.set_title(title or f"{kind} loss on a weight-space plane")
    return ax


def plot_training_path(surface: pd.DataFrame, coords: pd.DataFrame, *, kind: str | None = None,
                       value: str = "loss", levels: int = 15, log: bool | str = "auto", annotate: int = 6,
                       best: int | None = None, title: str | None = None, ax: Axes | None = None) -> Axes:
    """The training path in the PCA plane of its weights, drawn on the loss surface of that plane (Li et al.).

    Args:
        surface: :func:`landscape.weight_slices.path_surface` rows (``alpha`` = PC1, ``beta`` = PC2).
        coords: ``TrainingPath.coords`` (``epoch``, ``pc1``, ``pc2``); its ``attrs["ratio"]`` (explained
            variance of the two components) labels the axes.
        kind, value, levels, log: as :func:`plot_weight_contour`.
        annotate: label about this many epochs along the path (first and last always).
        best: an epoch of the path to mark with a diamond (e.g. the diagnosed best epoch).
        title, ax: as usual.

    Returns:
        The Axes; the final epoch (the plane's origin) is starred.
    """
    func = "plot_training_path"
    check_choice(value, list(VALUES), "value", func)
    check_table(surface, ["alpha", "beta", "kind", value], func)
    check_table(coords, ["epoch", "pc1", "pc2"], func)
    surface = surface[surface["kind"].astype(str) != "path"]  # path_surface tables carry the path's rows too
    kind = _kind(surface, kind)
    A, B, Z = _grid(surface, kind, value)
    path = coords.sort_values("epoch")
    ratio = coords.attrs.get("ratio") or surface.attrs.get("ratio")
    with style():
        ax = new_axes(ax, size=(5.0, 4.0))
        _contour(ax, A, B, Z, levels, log, value, True)
        ax.plot(path["pc1"], path["pc2"], color="white", lw=2.6, zorder=3)
        ax.plot(path["pc1"], path["pc2"], color="#d62728", lw=1.4, marker="o", ms=3.5, zorder=4)
        ax.plot([path["pc1"].iloc[-1]], [path["pc2"].iloc[-1]], marker="*", ms=13, color="white", mec="black",
                mew=0.7, ls="none", zorder=5)
        at_best = path[path["epoch"] == best] if best is not None else path.iloc[:0]
        if not at_best.empty:
            ax.plot(at_best["pc1"], at_best["pc2"], marker="D", ms=7, color="#f0e442", mec="black", mew=0.7,
                    ls="none", zorder=6, label=f"best epoch ({int(best)})")
            ax.legend(loc="best", frameon=True, framealpha=0.8)
        span = np.array([np.ptp(A), np.ptp(B)])
        step, shown = max(1, int(np.ceil(len(path) / max(annotate, 1)))), []
        for i, (_, row) in enumerate(path.iloc[::-1].iterrows()):  # the final epoch first: always labelled
            at = np.array([row["pc1"], row["pc2"]]) / span
            near = any(np.hypot(*(at - s)) < 0.04 for s in shown)
            if (i == 0 or i == len(path) - 1 or (len(path) - 1 - i) % step == 0) and not near:
                shown.append(at)
                ax.annotate(f"{int(row['epoch'])}", (row["pc1"], row["pc2"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color="black",
                            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
        labels = [f"PC{c + 1}" + (f" ({100 * ratio[c]:.1f} % of the variance)" if ratio else "") for c in range(2)]
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_title(title or f"training path on the {kind} loss surface (epochs labelled)")
    return ax


def plot_weight_slices_best_last(table: pd.DataFrame, *, by: str | None = None, value: str = "loss",
                                 title: str | None = None) -> Figure:
    """1D weight slices of every run, the checkpoints (e.g. best vs last epoch) overlaid in colour.

    Args:
        table: :func:`landscape.weight_slices.weight_slice_1d` rows (``direction``, ``alpha``, ``kind``,
            ``value``) of one or several checkpoints; ``run`` gives one row of panels per run; ``epoch`` (or a
            text ``label`` from :func:`landscape.plotting.label_epochs`) tells the checkpoints apart.
        by: the column overlaid in colour (default: ``label``, else ``epoch``, else ``checkpoint``, else none).
        value: ``loss`` or ``acc`` (in %).
        title: optional figure title.

    Returns:
        The Figure: rows are runs, columns the loss kinds (clean, robust), y shared within a row; several
        directions are told apart by line style. α = 0 (dotted) is each checkpoint's own weights.
    """
    func = "plot_weight_slices_best_last"
    check_choice(value, list(VALUES), "value", func)
    check_table(table, ["direction", "alpha", "kind", value], func)
    by = default_group(table, by, func) or ("checkpoint" if "checkpoint" in table.columns else None)
    groups = list(pd.unique(table[by])) if by else [None]
    if by == "epoch":
        groups = sorted(groups)
    colors = colors_for(groups)
    kinds = [k for k in ("clean", "robust") if k in set(table["kind"].astype(str))]
    if not kinds:
        raise ValueError(f"{func}: no clean or robust rows; kinds: {sorted(table['kind'].astype(str).unique())}")
    directions = list(pd.unique(table["direction"].astype(str)))
    runs = runs_of(table)
    with style():
        fig, axes = new_figure(len(runs), len(kinds), panel=(3.9, 3.0), sharex=True, sharey="row")
        for i, run in enumerate(runs):
            rows_run = rows_of_run(table, run)
            for j, k in enumerate(kinds):
                ax = axes[i, j]
                for g in groups:
                    for d_i, d in enumerate(directions):
                        rows = rows_run[(rows_run["kind"].astype(str) == k)
                                        & (rows_run["direction"].astype(str) == d)]
                        rows = rows if g is None else rows[rows[by] == g]
                        if rows.empty:
                            continue
                        rows = rows.sort_values("alpha")
                        ax.plot(rows["alpha"].to_numpy(float), _v(rows, value), color=colors[g],
                                ls=_DASHES[d_i % len(_DASHES)], marker="o" if len(rows) <= 15 else None, ms=3)
                ax.axvline(0.0, color="0.35", ls=":", lw=1.0)
                ax.set_title(f"{k} loss" + (f" — {run}" if run is not None else ""))
                if i == len(runs) - 1:
                    ax.set_xlabel(_step_label("α", directions[0], table.attrs) if len(directions) == 1
                                  else "α: step along each direction")
            axes[i, 0].set_ylabel(VALUES[value])
        handles = [Line2D([], [], color=colors[g], lw=2, label=_group_label(by, g)) for g in groups if g is not None]
        if len(directions) > 1:
            handles += [Line2D([], [], color="0.3", ls=_DASHES[i % len(_DASHES)], label=f"{d} direction")
                        for i, d in enumerate(directions)]
        handles.append(Line2D([], [], color="0.35", ls=":", label="the checkpoint's weights (α = 0)"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), frameon=False)
        if title:
            fig.suptitle(title)
    return fig


def _group_label(by, g) -> str:
    return str(g).rsplit("/", 1)[-1] if by == "checkpoint" else group_name(by, g)


def plot_training_paths(table: pd.DataFrame, *, kind: str | None = None, value: str = "loss",
                        best: dict | int | None = None, title: str | None = None) -> Figure:
    """The training path of every run on the loss surface of its PCA plane, one panel per run.

    Args:
        table: :func:`landscape.weight_slices.path_surface` tables (the grid and the ``kind == "path"`` rows),
            with ``run`` for several runs. A run without path rows gets its surface alone.
        kind, value: as :func:`plot_training_path` (default kind: clean when the table has it).
        best: the epoch to mark on each path, ``{run: epoch}`` or one epoch for every run (e.g. the diagnosed
            best epochs).
        title: optional figure title.

    Returns:
        The Figure (each panel on its own colour scale: the planes of different runs are different planes).
    """
    func = "plot_training_paths"
    check_table(table, ["alpha", "beta", "kind", value], func)
    grid_kinds = [k for k in pd.unique(table["kind"].astype(str)) if k != "path"]
    if not grid_kinds:
        raise ValueError(f"{func}: the table holds no loss surface (only path rows)")
    kind = kind if kind is not None else ("clean" if "clean" in grid_kinds else grid_kinds[0])
    runs = runs_of(table)
    ncols = min(len(runs), 2)
    nrows = -(-len(runs) // ncols)
    with style():
        fig, axes = new_figure(nrows, ncols, panel=(5.0, 4.0))
        for i, run in enumerate(runs):
            ax = axes[i // ncols, i % ncols]
            rows = rows_of_run(table, run)
            path = rows[rows["kind"].astype(str) == "path"]
            head = run if run is not None else None
            if path.empty or not {"epoch", "pc1", "pc2"} <= set(path.columns):
                plot_weight_contour(rows[rows["kind"].astype(str) != "path"], kind=kind, value=value, ax=ax,
                                    title=f"{head}: {kind} loss on the PCA plane (no path rows)")
                continue
            coords = path.copy()
            ratio = [coords[f"pc{c + 1}_ratio"].iloc[0] for c in range(2)
                     if f"pc{c + 1}_ratio" in coords.columns]
            coords.attrs = {"ratio": [float(r) for r in ratio]} if len(ratio) == 2 and np.isfinite(ratio).all() else {}
            mark = of_run(best, run) if isinstance(best, dict) else best
            plot_training_path(rows, coords, kind=kind, value=value, best=mark, ax=ax,
                               title=(f"{head}: " if head else "") + f"{kind} loss, epochs labelled")
        for j in range(len(runs), nrows * ncols):
            axes[j // ncols, j % ncols].set_visible(False)
        if title:
            fig.suptitle(title)
    return fig


def plot_spectral_density(table: pd.DataFrame, *, log: bool = True, title: str | None = None,
                          ax: Axes | None = None) -> Axes:
    """Spectral density of the weight Hessian (e.g. by stochastic Lanczos quadrature), one line per epoch.

    Args:
        table: columns ``grid`` (eigenvalue), ``density`` and optionally ``epoch`` (one curve each, coloured
            from early to late).
        log: log-scaled density axis (the spectrum's bulk and outliers differ by decades).
        title, ax: as usual.

    Returns:
        The Axes.
    """
    func = "plot_spectral_density"
    check_table(table, ["grid", "density"], func)
    epochs = sorted(pd.unique(table["epoch"])) if "epoch" in table.columns else [None]
    with style():
        ax = new_axes(ax, size=(4.8, 3.4))
        cmap = mpl.colormaps[CMAP]
        for i, e in enumerate(epochs):
            rows = (table if e is None else table[table["epoch"] == e]).sort_values("grid")
            dens = rows["density"].to_numpy(float)
            if log:
                dens = np.where(dens > 0, dens, np.nan)
            color = PALETTE[0] if e is None else cmap(i / max(len(epochs) - 1, 1) * 0.9)
            ax.plot(rows["grid"].to_numpy(float), dens, color=color, lw=1.3,
                    label=None if e is None else f"epoch {e}")
        if log:
            ax.set_yscale("log")
            top = float(np.nanmax(pd.to_numeric(table["density"], errors="coerce").to_numpy(float)))
            if top > 0:  # kernel tails reach absurd decades: show eight below the peak
                ax.set_ylim(bottom=top * 1e-8, top=top * 3)
        ax.set_xlabel("eigenvalue of the weight Hessian")
        ax.set_ylabel("spectral density")
        if epochs != [None]:
            ax.legend(frameon=False, ncols=1 if len(epochs) <= 6 else 2)
        ax.set_title(title or "weight-Hessian spectral density")
    return ax


__all__ = ["plot_spectral_density", "plot_training_path", "plot_training_paths", "plot_weight_contour",
           "plot_weight_slice_1d", "plot_weight_slices_best_last"]
