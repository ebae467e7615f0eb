"""The gradient-regularisation effect of AT beside curvature: first-order share and curvature per epoch."""
from __future__ import annotations

from typing import Mapping

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._style import best_epoch_lines, new_figure, run_styles, style
from ._tables import MEASURE_UNITS, best_and_last, check_table, measure_label, rows_of_run, runs_of

__all__ = ["plot_first_order_share"]

#: Curvature columns tried in this order when ``curvature=None`` (the paper's hs first).
CURVATURE_PREFERENCE = ("hs", "curv_adv", "eig_top", "curv_rand")


def _per_epoch(rows: pd.DataFrame, split: str, column: str) -> pd.DataFrame:
    part = rows[rows["split"].astype(str) == split]
    return part.groupby("epoch", as_index=False)[column].mean().sort_values("epoch")


def _best(rows: pd.DataFrame, run, best_epochs: Mapping | int | None) -> int | None:
    if best_epochs is not None:
        return best_epochs.get(run) if isinstance(best_epochs, Mapping) else int(best_epochs)
    if "acc_adv" not in rows.columns:
        return None
    test = rows[rows["split"].astype(str) == "test"].groupby("epoch")["acc_adv"].mean()
    mark = best_and_last(test.index.to_numpy(), test.to_numpy(dtype=float))
    return None if mark is None else mark[0]


def plot_first_order_share(table: pd.DataFrame, *, curvature: str | None = None, split: str = "test",
                           stat: str = "median", mark_best: bool = True, best_epochs: Mapping | None = None,
                           title: str | None = None) -> Figure:
    """Two panels against epoch: the curvature (left) and the first-order share of the adversarial loss
    increase ``eps·‖∇ₓL‖_* / (L(x_adv) − L(x))`` (right), one line per run.

    The paper's second finding reads off the pair: as curvature grows over training, the first-order share
    falls, i.e. AT's implicit regularisation of the input gradient accounts for less of the robust loss.
    The share is a ratio with a heavy upper tail (small increases), so its per-epoch ``median`` over samples
    is drawn by default.

    Args:
        table: trajectory table with ``epoch``, ``split``, ``fo_share_<stat>`` and ``<curvature>_mean``;
            optional ``run`` (overlaid) and ``acc_adv`` (best-epoch mark).
        curvature: curvature measure to draw (``hs``, ``curv_adv``, ``eig_top``, ...); default the first of
            :data:`CURVATURE_PREFERENCE` present.
        split: ``"test"`` (default) or ``"train"``.
        stat: summary of the share drawn: ``"median"`` (default) or ``"mean"``.
        mark_best: dotted line at each run's best epoch (the official rule, latest on ties); runs of one
            method (``<method>/<seed>``) get one line, at the median over its seeds.
        best_epochs: ``{run: epoch}`` (or one epoch for a table without runs), e.g. the diagnosis' best epoch
            from the training log; default: the best epoch of the table's own ``acc_adv``.
        title: optional figure title.

    Returns:
        The Figure (1 x 2 panels).
    """
    func = "plot_first_order_share"
    if stat not in ("median", "mean"):
        raise ValueError(f"{func}: stat={stat!r} is not allowed; choose one of ['median', 'mean']")
    check_table(table, ["epoch", "split", f"fo_share_{stat}"], func)
    if curvature is None:
        found = [c for c in CURVATURE_PREFERENCE if f"{c}_mean" in table.columns]
        if not found:
            raise ValueError(f"{func}: table has no curvature column (any of "
                             f"{[c + '_mean' for c in CURVATURE_PREFERENCE]})")
        curvature = found[0]
    check_table(table, [f"{curvature}_mean"], func)
    if not (table["split"].astype(str) == split).any():
        raise ValueError(f"{func}: no rows with split {split!r}; table has {sorted(set(table['split'].astype(str)))}")
    runs = runs_of(table)
    styles = run_styles(runs)
    with style():
        fig, axes = new_figure(1, 2, panel=(3.9, 2.9), sharex=True)
        ax_c, ax_s = axes[0]
        best = {}
        for run in runs:
            rows = rows_of_run(table, run)
            color = styles[run].color
            c = _per_epoch(rows, split, f"{curvature}_mean")
            s = _per_epoch(rows, split, f"fo_share_{stat}")
            ax_c.plot(c["epoch"], c[f"{curvature}_mean"], color=color, marker=styles[run].marker, ms=3.5)
            ax_s.plot(s["epoch"], s[f"fo_share_{stat}"], color=color, marker=styles[run].marker, ms=3.5)
            best[run] = _best(rows, run, best_epochs) if mark_best else None
        lines = best_epoch_lines(best, styles)  # one dotted line per method (median over its seeds)
        for epoch, color in lines:
            for ax in (ax_c, ax_s):
                ax.axvline(epoch, color=color, ls=":", lw=1.2)
        ax_c.set_title(measure_label(curvature, units=False))
        ax_c.set_ylabel(MEASURE_UNITS.get(curvature, curvature))
        ax_s.set_title(f"first-order share ({stat} over samples)")
        ax_s.set_ylabel("eps‖∇ₓL‖_* / ΔL")  # ΔL = L(x_adv) − L(x); short enough to clear the left panel
        ax_s.axhline(1.0, color="0.5", lw=0.8)
        for ax in (ax_c, ax_s):
            ax.set_xlabel("epoch")
        handles = [Line2D([], [], color=styles[r].color, marker=styles[r].marker, label=str(r))
                   for r in runs if r is not None]
        if mark_best:
            per_method = len(lines) < sum(v is not None for v in best.values())
            handles.append(Line2D([], [], color="0.3", ls=":",
                                  label="best epoch (median over seeds)" if per_method else "best epoch"))
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
        fig.suptitle(title or f"{split}: curvature and the first-order share of the adversarial loss increase")
    return fig
