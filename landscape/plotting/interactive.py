"""Interactive (Plotly) versions of the per-method curves: hovering a line shows its run, epoch and value.

Plotly is used rather than hand-written JavaScript (see docs/figures.md for the choice): the functions return
``plotly.graph_objects.Figure`` objects; the report embeds them with plotly.js inlined once, so the page
works offline. Static PNG/PDF figures stay the matplotlib ones.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from .methods import CURVE_COLUMNS, chosen_measures, method_colors, method_of, seed_summary
from ._style import shade
from ._tables import MEASURE_UNITS, accuracy_scale, check_table, measure_label


def _rgba(color, alpha: float = 1.0) -> str:
    r, g, b = (int(round(255 * c)) for c in color[:3])
    return f"rgba({r},{g},{b},{alpha})"


def interactive_method_curves(table: pd.DataFrame, columns: Sequence[str] | None = None, *,
                              split: str = "test", title: str | None = None):
    """Per-epoch curves of each run, thin, over the method's mean over seeds (thick) and min–max band.

    Args:
        table: trajectory table (``epoch``, ``split``, the columns; ``run`` = ``<method>/<seed>``).
        columns: default ``acc_adv``, ``acc_clean``, ``loss_adv`` (those present).
        split: the split drawn.
        title: optional title.

    Returns:
        A ``plotly.graph_objects.Figure``, one subplot per column; clicking a method in the legend hides it.
    """
    columns = list(columns) if columns is not None else [c for c in CURVE_COLUMNS if c in table.columns]
    labels = {c: CURVE_COLUMNS.get(c, c) for c in columns}
    scale = {c: (accuracy_scale(table, [c]) if c.startswith("acc") else 1.0) for c in columns}
    return _chart(table, columns, labels, scale, split, title)


def interactive_method_measures(table: pd.DataFrame, measures: Sequence[str] | None = None, *,
                                split: str = "test", title: str | None = None):
    """As :func:`interactive_method_curves` for the ``<m>_mean`` landscape measures (default: the paper's
    four where present)."""
    measures = chosen_measures(table, measures, "interactive_method_measures")
    columns = [f"{m}_mean" for m in measures]
    labels = {f"{m}_mean": f"{measure_label(m, units=False)} ({MEASURE_UNITS.get(m, '')})" for m in measures}
    return _chart(table, columns, labels, {c: 1.0 for c in columns}, split, title)


def _chart(table, columns, labels, scale, split, title):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not columns:
        raise ValueError("interactive chart: no columns to draw")
    check_table(table, ["epoch", "split", *columns], "interactive chart")
    summary = seed_summary(table, columns, splits=[split])
    if summary.empty:
        raise ValueError(f"interactive chart: no rows with split {split!r}")
    methods = list(pd.unique(summary["method"]))
    colors = method_colors(methods)
    data = table[table["split"].astype(str) == split]
    runs = list(pd.unique(data["run"].astype(str))) if "run" in data.columns else [None]
    ncols = min(len(columns), 3) if len(columns) != 4 else 2
    nrows = -(-len(columns) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[labels[c] for c in columns],
                        horizontal_spacing=0.07, vertical_spacing=0.16)
    shown: set[str] = set()
    for i, col in enumerate(columns):
        row, colno = divmod(i, ncols)
        k = scale[col]
        for m in methods:
            part = summary[(summary["method"] == m) & (summary["column"] == col)]
            color = colors[m]
            if (part["seeds"] > 1).any():
                x = list(part["epoch"]) + list(part["epoch"])[::-1]
                y = list(part["hi"] * k) + list(part["lo"] * k)[::-1]
                fig.add_trace(go.Scatter(x=x, y=y, fill="toself", fillcolor=_rgba(color, 0.15), mode="none",
                                         line=dict(width=0), hoverinfo="skip", legendgroup=m, showlegend=False),
                              row=row + 1, col=colno + 1)
            members = [r for r in runs if r is not None and method_of(r) == m]
            for j, run in enumerate(members if len(members) > 1 else []):
                rows = data[data["run"].astype(str) == run].groupby("epoch", as_index=False)[col].mean()
                fig.add_trace(go.Scatter(
                    x=rows["epoch"], y=rows[col] * k, mode="lines", legendgroup=m, showlegend=False,
                    line=dict(color=_rgba(shade(color, j, len(members)), 0.55), width=1),
                    name=run, hovertemplate=f"run {run}<br>epoch %{{x}}<br>{labels[col]}: %{{y:.4g}}<extra></extra>"),
                    row=row + 1, col=colno + 1)
            fig.add_trace(go.Scatter(
                x=part["epoch"], y=part["mean"] * k, mode="lines", legendgroup=m, name=m,
                showlegend=m not in shown, line=dict(color=_rgba(color), width=2.5),
                customdata=part[["seeds"]].to_numpy(),
                hovertemplate=(f"{m} (mean of %{{customdata[0]}} run(s))<br>epoch %{{x}}<br>{labels[col]}: "
                               "%{y:.4g}<extra></extra>")),
                row=row + 1, col=colno + 1)
            shown.add(m)
        fig.update_xaxes(title_text="epoch", row=row + 1, col=colno + 1)
    fig.update_layout(template="plotly_white", height=300 * nrows + 110, margin=dict(l=50, r=20, t=80, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0 + 0.25 / nrows, x=0,
                                  title=dict(text="method (click to hide) ")),
                      hovermode="closest", title=dict(text=title) if title else None,
                      font=dict(family="system-ui, sans-serif", size=12))
    fig.update_annotations(font_size=13)
    return fig


__all__ = ["interactive_method_curves", "interactive_method_measures"]
