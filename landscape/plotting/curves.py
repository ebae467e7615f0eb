"""Learning curves: clean/robust accuracy and loss per epoch, best epoch and robust-overfitting gap."""
from __future__ import annotations

import math
from typing import Mapping

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ._style import PALETTE, SPLIT_STYLES, new_figure, style
from ._tables import accuracy_scale, best_and_last, check_table, of_run, rows_of_run, runs_of

#: (column, legend name, colour) of the curves drawn per panel row.
_ACC = [("acc_adv", "robust", PALETTE[0]), ("acc_clean", "clean", PALETTE[1])]
_LOSS = [("loss_adv", "robust", PALETTE[0]), ("loss_clean", "clean", PALETTE[1])]
_GAP_COLOR = PALETTE[4]


def plot_learning_curves(table: pd.DataFrame, *, loss: bool = True, title: str | None = None,
                         diagnoses: Mapping[str, Mapping] | None = None) -> Figure:
    """Clean and robust accuracy (and loss) against epoch, one column of panels per run.

    Robust curves are blue, clean orange; test solid, train dashed. The best epoch (highest robust *test*
    accuracy, the latest epoch on ties) is marked with a dotted line and a star, and the robust-overfitting gap
    (best − last robust test accuracy, in percentage points) is shaded between the best and the last epoch
    and written on the panel with its source. Given ``diagnoses``, a run's best/last epoch, accuracies and gap
    are the diagnosis' (the numbers ``landscape diagnose`` prints, from the run's ``metrics.csv`` when it has
    one); otherwise they are read off the curve drawn.

    Args:
        table: trajectory table or training ``metrics.csv`` (long format, one row per epoch and split) with
            columns ``epoch``, ``split`` (``train``/``test``), ``acc_clean``, ``acc_adv``; optional
            ``loss_clean``, ``loss_adv`` (a loss row is drawn when present) and ``run`` (one column of
            panels per run). Accuracies may be fractions or percentages; they are shown in percent.
        loss: draw the loss row when the loss columns exist.
        title: optional figure title.
        diagnoses: run name -> :meth:`landscape.diagnose.Diagnosis.to_dict` (a table without ``run`` takes
            the only entry).

    Returns:
        The Figure: per run an accuracy panel above a loss panel, runs side by side (wrapped to 2 columns
        for 4 runs, 3 for more); y shared by all accuracy panels and by all loss panels.

    Example:
        >>> fig = plot_learning_curves(pd.read_parquet("runs/demo/pgd_at/trajectory.parquet"))
    """
    func = "plot_learning_curves"
    check_table(table, ["epoch", "split", "acc_clean", "acc_adv"], func)
    splits = set(table["split"].astype(str))
    if not splits & {"train", "test"}:
        raise ValueError(f"{func}: column 'split' must contain 'train' and/or 'test', got {sorted(splits)}")
    scale = accuracy_scale(table, ["acc_clean", "acc_adv"])
    has_loss = loss and any(c in table.columns and table[c].notna().any() for c in ("loss_clean", "loss_adv"))
    runs = runs_of(table)
    per_run = 2 if has_loss else 1  # panel rows per run: accuracy [, loss]
    ncols = len(runs) if len(runs) <= 3 else (2 if len(runs) == 4 else 3)
    blocks = math.ceil(len(runs) / ncols)
    with style():
        fig, axes = new_figure(per_run * blocks, ncols, panel=(3.9, 2.9))
        for k in range(per_run):  # share y between all accuracy panels, and between all loss panels
            first = axes[k, 0]
            for ax in axes[k::per_run].ravel():
                if ax is not first:
                    ax.sharey(first)
        for j, run in enumerate(runs):
            block, col = divmod(j, ncols)
            acc_ax = axes[block * per_run, col]
            rows = rows_of_run(table, run)
            curve = _per_epoch(rows)
            mark = _draw_accuracy(acc_ax, curve, scale, _diagnosis_of(diagnoses, run))
            acc_ax.set_title(str(run) if run is not None else "learning curves")
            if has_loss:
                loss_ax = axes[block * per_run + 1, col]
                loss_ax.sharex(acc_ax)
                acc_ax.xaxis.set_tick_params(labelbottom=False)
                _draw_rows(loss_ax, curve, _LOSS, 1.0)
                if mark is not None:
                    loss_ax.axvline(mark[0], color="0.35", ls=":", lw=1.1)
            axes[block * per_run + per_run - 1, col].set_xlabel("epoch")
            if col == 0:
                acc_ax.set_ylabel("accuracy (%)")
                if has_loss:
                    axes[block * per_run + 1, 0].set_ylabel("cross-entropy loss (nats)")
        for j in range(len(runs), blocks * ncols):  # unused slots of the last block
            block, col = divmod(j, ncols)
            for k in range(per_run):
                axes[block * per_run + k, col].set_visible(False)
        _legend(fig, [s for s in ("test", "train") if s in splits], ncols=3 * ncols)
        if title:
            fig.suptitle(title)
    return fig


def _per_epoch(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean of every numeric column per (split, epoch), sorted by epoch."""
    cols = [c for c in ("acc_clean", "acc_adv", "loss_clean", "loss_adv") if c in rows.columns]
    data = rows[["epoch", "split", *cols]].copy()
    data["split"] = data["split"].astype(str)
    for c in cols:
        data[c] = pd.to_numeric(data[c], errors="coerce")
    return data.groupby(["split", "epoch"], as_index=False)[cols].mean().sort_values("epoch")


def _draw_rows(ax, curve: pd.DataFrame, spec, scale: float) -> None:
    for split, ls in SPLIT_STYLES.items():
        part = curve[curve["split"] == split]
        for col, _, color in spec:
            if col in part.columns and part[col].notna().any():
                ok = part[col].notna()
                ax.plot(part["epoch"][ok], part[col][ok] * scale, ls=ls, color=color)


def _diagnosis_of(diagnoses: Mapping[str, Mapping] | None, run) -> Mapping | None:
    """The run's diagnosis when it names a best epoch (a table without runs takes the only one)."""
    d = of_run(diagnoses, run)
    return d if d and d.get("best_epoch") is not None and d.get("last_epoch") is not None else None


def _draw_accuracy(ax, curve: pd.DataFrame, scale: float, diagnosis: Mapping | None = None):
    """Draw the accuracy panel; return (best_epoch, best, last_epoch, last) in percent, or None.

    The marks come from ``diagnosis`` when given (its source named on the panel), else from the test curve."""
    from ..diagnose import source_label

    _draw_rows(ax, curve, _ACC, scale)
    if diagnosis is not None:
        mark = (int(diagnosis["best_epoch"]), 100 * float(diagnosis["best_acc_adv"]),
                int(diagnosis["last_epoch"]), 100 * float(diagnosis["last_acc_adv"]))
        source = source_label(diagnosis.get("best_source", ""))
    else:
        test = curve[curve["split"] == "test"]
        mark = best_and_last(test["epoch"].to_numpy(), test["acc_adv"].to_numpy() * scale) if len(test) else None
        source = "the curve shown"
    if mark is None:
        return None
    best_epoch, best, last_epoch, last = mark
    ax.axvline(best_epoch, color="0.35", ls=":", lw=1.1)
    ax.plot([best_epoch], [best], marker="*", ms=11, color=PALETTE[0], mec="black", mew=0.6, zorder=5)
    gap = best - last
    if last_epoch > best_epoch and gap > 0:
        ax.fill_between([best_epoch, last_epoch], [last, last], [best, best], color=_GAP_COLOR, alpha=0.18,
                        lw=0, zorder=0)
        text = f"RO gap {gap:.1f} pp\nbest ep {best_epoch}: {best:.1f}%"
    else:
        text = f"no RO gap\nbest = last ep {best_epoch}: {best:.1f}%"
    text += f"\nfrom {source}"
    ax.text(0.98, 0.03, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
            bbox=dict(boxstyle="round,pad=0.25", fc="white", ec=_GAP_COLOR, alpha=0.9))
    return mark


def _legend(fig: Figure, splits: list[str], ncols: int) -> None:
    handles = [Line2D([], [], color=c, lw=2, label=name) for _, name, c in _ACC]
    handles += [Line2D([], [], color="0.3", ls=SPLIT_STYLES[s], label=s) for s in splits]
    handles += [Line2D([], [], color=PALETTE[0], marker="*", ls="none", ms=10, mec="black", mew=0.6,
                       label="best robust test acc"),
                Patch(color=_GAP_COLOR, alpha=0.3, label="RO gap (best − last)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), ncols), frameon=False)


__all__ = ["plot_learning_curves"]
