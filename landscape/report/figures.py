"""The report's figures: every :data:`landscape.plotting.FIGURES` spec drawn from the combined run tables,
saved as PNG (and, where the spec has one, an interactive Plotly version kept as an HTML fragment)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from .._base import LandscapeError
from ..runs import RUN_FILES
from .data import ReportData


@dataclasses.dataclass
class FigureResult:
    """One drawn (or skipped) figure of the report."""

    key: str
    title: str
    caption: str
    section: str
    path: Path | None = None        # the PNG
    interactive: str | None = None  # a Plotly <div> + script (plotly.js itself is inlined once per page)
    skipped: str | None = None
    width_in: float | None = None   # the figure's width in inches: shown at its natural size


def _label_best_last(table: pd.DataFrame, data: ReportData) -> pd.DataFrame:
    """Rows of each run's best and last epoch labelled ``best``/``last``, when the table has epochs."""
    from ..plotting import label_epochs

    epochs = {r: e for r, e in data.best_last().items() if (table["run"] == r).any()}
    if "epoch" not in table.columns or not epochs:
        return table
    try:
        labelled = label_epochs(table, epochs)
    except ValueError:
        return table
    labelled.attrs = dict(table.attrs)
    return labelled


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(text)) or "run"


def _options(data: ReportData) -> dict[str, Any]:
    """Options every figure may take (each receives those it declares)."""
    return {"since": {run: e["best"] for run, e in data.best_last().items()} or None,
            "diagnoses": {run: d for run, d in data.diagnoses.items() if "error" not in d} or None}


def figure_jobs(data: ReportData, specs=None) -> list[tuple[str, Any, pd.DataFrame | None, str | None, str]]:
    """``(key, spec, table, reason-if-skipped, title)`` for each figure the report shows, in registry order."""
    from ..plotting import FIGURES

    jobs = []
    for spec in (specs if specs is not None else FIGURES.values()):
        table = data.tables.get(spec.table)
        title = spec.title or spec.name
        if table is None:
            jobs.append((spec.name, spec, None, f"no {RUN_FILES[spec.table]} in any run", title))
            continue
        if not spec.shown_for(table):
            continue
        if spec.best_last:
            table = _label_best_last(table, data)
        if spec.per_run:
            for run, part in table.groupby("run", sort=False):
                part = part.copy()
                part.attrs = dict(table.attrs)
                jobs.append((f"{spec.stem or spec.name}_{_slug(run)}", spec, part, None, f"{title} — {run}"))
        else:
            jobs.append((spec.stem or spec.name, spec, table, None, title))
    return jobs


def render_figures(data: ReportData, fig_dir: Path, *, dpi: int, progress: bool = False,
                   interactive: bool = True) -> list[FigureResult]:
    """Draw every figure of the report into ``fig_dir`` (PNG); a figure whose table is missing or unusable
    is kept as skipped with the reason, never an error."""
    from .._progress import tqdm  # quiet off a terminal

    from ..plotting import save_figure

    options = _options(data)
    results = []
    for key, spec, table, skipped, title in tqdm(figure_jobs(data), desc="figures", disable=not progress,
                                                 leave=False):
        result = FigureResult(key, title, spec.caption, spec.section, skipped=skipped)
        results.append(result)
        if table is None:
            continue
        try:
            fig = spec.draw(table, **options)
        except (ValueError, TypeError, KeyError) as exc:  # a table the figure cannot use: note, go on
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            result.skipped = f"could not draw: {first}"
            continue
        result.width_in = float(fig.get_size_inches()[0])
        result.path = save_figure(fig, fig_dir / key, formats=("png",), dpi=dpi)[0]
        fig.clf()
        if interactive and spec.interactive is not None:
            try:
                chart = spec.interactive(table)
            except (ValueError, TypeError, KeyError):
                continue  # the PNG stands in
            result.interactive = chart.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{key}",
                                               config={"displaylogo": False, "responsive": True})
    return results


def plotly_js() -> str:
    """plotly.js, to inline once in the page (the report works offline)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


__all__ = ["FigureResult", "figure_jobs", "plotly_js", "render_figures"]


def attribution_figures(data: ReportData, fig_dir: Path, *, dpi: int, top: int = 8) -> list[dict[str, Any]]:
    """Per run with a ``histories.parquet`` (``landscape trajectory --histories``): its top-``top`` training
    samples by the combined attribution rank (:func:`landscape.attribution.attribute`) as a table and the grid
    figure; a run whose histories cannot be scored is kept with the reason."""
    from ..plotting import save_figure
    from ..plotting.attribution import attribution_section

    out = []
    for r in data.runs:
        path = r.files.get("histories")
        if path is None:
            continue
        entry: dict[str, Any] = {"run": r.name, "figure": None, "table": None, "skipped": None}
        try:
            table, fig = attribution_section(path.parent, top=top,
                                             best_epoch=data.diagnoses.get(r.name, {}).get("best_epoch"))
        except (ValueError, TypeError, KeyError, LandscapeError) as exc:
            entry["skipped"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            out.append(entry)
            continue
        key = f"attribution_{_slug(r.name)}"
        result = FigureResult(key, f"Top training samples: {r.name}", "The highest-ranked training samples by "
                              "the combined attribution rank, with their label, correctness and per-epoch curves.",
                              "attribution", width_in=float(fig.get_size_inches()[0]))
        result.path = save_figure(fig, fig_dir / key, formats=("png",), dpi=dpi)[0]
        fig.clf()
        entry.update(figure=result, table=table)
        out.append(entry)
    return out
