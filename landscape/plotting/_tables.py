"""Small helpers that read (never compute) the documented tables for the figures."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..measures.registry import column_labels, column_units

#: Human-readable names of the measure columns, from the measure registry (plus the losses).
MEASURE_LABELS = {**column_labels(), "loss_clean": "clean loss", "loss_adv": "robust loss"}
#: Units of each measure column, for axis labels (inputs are in [0,1] pixel units, losses in nats).
MEASURE_UNITS = {**column_units(), "loss_clean": "CE, nats", "loss_adv": "CE, nats"}


def measure_label(name: str, *, units: bool = True) -> str:
    label = MEASURE_LABELS.get(name, name.replace("_", " "))
    if units and name in MEASURE_UNITS:
        return f"{label} ({MEASURE_UNITS[name]})"
    return label


def check_table(table, required: Iterable[str], func: str) -> pd.DataFrame:
    """Raise TypeError/ValueError unless ``table`` is a non-empty DataFrame with ``required`` columns."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{func}: expected a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        cols = [str(c) for c in table.columns]
        shown = ", ".join(cols[:15]) + (f", ... ({len(cols)} in all)" if len(cols) > 15 else "")
        raise ValueError(f"{func}: table is missing required column(s) {missing}; it has {shown}")
    if table.empty:
        raise ValueError(f"{func}: table is empty")
    return table


def check_choice(value, allowed: Sequence, name: str, func: str):
    if value not in allowed:
        raise ValueError(f"{func}: {name}={value!r} is not allowed; choose one of {list(allowed)}")
    return value


def runs_of(table: pd.DataFrame) -> list:
    """Run names in order of first appearance ([None] when the table has no ``run`` column)."""
    if "run" not in table.columns:
        return [None]
    return list(pd.unique(table["run"].astype(str)))


def rows_of_run(table: pd.DataFrame, run) -> pd.DataFrame:
    if run is None:
        return table
    return table[table["run"].astype(str) == run]


def of_run(per_run: Mapping | None, run, default=None):
    """``per_run[run]`` (a table without runs, ``run`` None, takes the only entry), else ``default``."""
    if not per_run:
        return default
    if run is None and len(per_run) == 1:
        return next(iter(per_run.values()))
    return per_run.get(str(run), default)


def accuracy_scale(table: pd.DataFrame, columns: Sequence[str]) -> float:
    """100 when accuracies are stored as fractions (all values <= 1), else 1 (already in percent)."""
    values = pd.concat([table[c] for c in columns if c in table.columns], ignore_index=True)
    values = pd.to_numeric(values, errors="coerce").dropna()
    return 100.0 if values.empty or values.abs().max() <= 1.0 else 1.0


def best_and_last(epochs: np.ndarray, acc: np.ndarray) -> tuple[int, float, int, float] | None:
    """(best_epoch, best_acc, last_epoch, last_acc) of a robust-accuracy curve, NaNs ignored.

    The best epoch follows the official AdvLC rule (:func:`landscape.diagnose.best_index`): the highest
    accuracy, the latest epoch on ties.
    """
    from ..diagnose import best_index

    ok = np.isfinite(acc)
    if not ok.any():
        return None
    e, a = np.asarray(epochs)[ok], np.asarray(acc, dtype=float)[ok]
    order = np.argsort(e, kind="stable")
    e, a = e[order], a[order]
    i = best_index(a)
    return int(e[i]), float(a[i]), int(e[-1]), float(a[-1])


#: Text columns naming groups (e.g. "best"/"last"), in order of preference; see :func:`label_epochs`.
GROUP_COLUMNS = ("label", "epoch_label")


def default_group(table: pd.DataFrame, by: str | None, func: str) -> str | None:
    """The column whose values are overlaid: ``by`` if given, else a text ``label`` (or ``epoch_label``)
    column, else ``epoch``, else none. A numeric ``label`` (true classes) is never used by default."""
    if by is not None:
        check_table(table, [by], func)
        return by
    for col in GROUP_COLUMNS:
        if col in table.columns and not pd.api.types.is_numeric_dtype(table[col]):
            return col
    if "epoch" in table.columns:
        return "epoch"
    return None


def group_name(by: str | None, value) -> str:
    if by is None:
        return "all"
    if by == "epoch":
        return f"epoch {value}"
    return str(value)


def label_epochs(table: pd.DataFrame, epochs: Mapping, *, column: str | None = None) -> pd.DataFrame:
    """Keep the rows of the named epochs and add a text column naming them (e.g. best vs last).

    Args:
        table: any table with an ``epoch`` column (and ``run`` when ``epochs`` is given per run).
        epochs: ``{"best": 12, "last": 30}`` for every row, or per run
            ``{"pgd_at": {"best": 12, "last": 30}, ...}``.
        column: name of the added column; default ``label``, or ``epoch_label`` when the table already has a
            ``label`` column (the true classes of a per-sample table). Figures group by either by default.

    Returns:
        The selected rows with ``column`` set to the name (a row whose epoch is both best and last is kept
        twice, once under each name).
    """
    check_table(table, ["epoch"], "label_epochs")
    if column is None:
        column = "epoch_label" if "label" in table.columns else "label"
    elif column in table.columns:
        raise ValueError(f"label_epochs: the table already has a {column!r} column; choose another column=")
    if not isinstance(epochs, Mapping) or not epochs:
        raise TypeError(f"label_epochs: epochs must be a non-empty mapping, got {epochs!r}")
    per_run = all(isinstance(v, Mapping) for v in epochs.values())
    if per_run:
        check_table(table, ["run"], "label_epochs")
    parts = []
    items = epochs.items() if per_run else [(None, epochs)]
    for run, names in items:
        rows = rows_of_run(table, None if run is None else str(run))
        for name, epoch in names.items():
            if epoch is None:
                continue
            sel = rows[rows["epoch"] == epoch].copy()
            sel[column] = str(name)
            parts.append(sel)
    if not parts or all(p.empty for p in parts):
        raise ValueError(f"label_epochs: none of the epochs {dict(epochs)} are in the table "
                         f"(epochs present: {sorted(pd.unique(table['epoch']).tolist())[:20]})")
    return pd.concat(parts, ignore_index=True)
