"""``build_report``: one context, rendered by the HTML and the Markdown template (``templates/``)."""
from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import os
import struct
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from .._io import atomic_write_text
from .data import ReportData, StudyTable, findings_images, load_runs, load_study_table
from .figures import FigureResult, attribution_figures, plotly_js, render_figures
from .tables import (claims_rows, correlation_rows, diagnosis_rows, final_eval_rows, findings_rows, method_rows,
                     ranking_rows, versions)


@dataclasses.dataclass
class Findings:
    """A study's own summary: ``findings.csv`` formatted (header, rows) and ``findings*.png`` images."""

    source: Path | None = None
    header: list[str] = dataclasses.field(default_factory=list)
    rows: list[list[str]] = dataclasses.field(default_factory=list)
    images: list[Path] = dataclasses.field(default_factory=list)  # copies next to the report's figures
    note: str | None = None

    def __bool__(self) -> bool:
        return bool(self.rows or self.images or self.note)


def load_findings(run_dir: str | os.PathLike, fig_dir: Path | None = None) -> Findings:
    """The findings of ``run_dir``: its ``findings.csv`` as formatted rows, and its ``findings.png`` /
    ``findings_*.png`` images (copied into ``fig_dir`` when given). An unusable table becomes ``note``."""
    study = load_study_table(run_dir, "findings")
    out = Findings(source=study.source, note=study.note, images=findings_images(run_dir, fig_dir))
    if study.table is not None:
        try:
            out.header, out.rows = findings_rows(study.table)
        except ValueError as exc:
            out.note = str(exc).splitlines()[0]
    return out


def _table(header, rows, table_id: str | None = None, caption: str | None = None) -> dict[str, Any]:
    return {"header": header, "rows": rows, "id": table_id, "caption": caption}


def _study_table(study: StudyTable, formatter, table_id: str, caption: str) -> dict[str, Any] | None:
    if not study:
        return None
    if study.table is None:
        return {"note": f"{study.source.name}: {study.note}", "id": table_id}
    try:
        return _table(*formatter(study.table), table_id=table_id, caption=caption)
    except (ValueError, KeyError) as exc:
        return {"note": f"{study.source.name}: {str(exc).splitlines()[0]}", "id": table_id}


def _png_width(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(24)
    return struct.unpack(">I", head[16:20])[0]


def _figure(f: FigureResult, out: Path, dpi: int) -> dict[str, Any]:
    d = dataclasses.asdict(f)
    d["rel"] = os.path.relpath(f.path, out).replace(os.sep, "/") if f.path else None
    d["css_width"] = round(_png_width(f.path) * 96 / dpi) if f.path else None  # natural size: fonts as drawn
    return d


def report_context(data: ReportData, figures: list[FigureResult], findings: Findings, out: Path, *, dpi: int,
                   title: str) -> dict[str, Any]:
    """Everything both templates show, as plain values (paths relative to ``out``)."""
    notes = list(data.notes)
    for run, d in data.diagnoses.items():
        notes += [f"{run}: {n}" for n in d.get("notes") or []]
    figs = [_figure(f, out, dpi) for f in figures]
    corr = correlation_rows(data.diagnoses)
    final = None
    if data.final_eval is not None:
        try:
            final = _table(*final_eval_rows(data.final_eval), table_id="final-eval-table",
                           caption="From final_eval.csv: the best and last checkpoints under the final "
                                   "evaluation attacks, mean ± sd over each method's runs.")
        except (ValueError, KeyError) as exc:
            final = {"note": f"final_eval.csv: {str(exc).splitlines()[0]}", "id": "final-eval-table"}
    vers = versions()
    ranking = ranking_rows(data.diagnoses)
    spaces = {row[2] for row in ranking[1]}
    return {
        "title": title,
        "generated": _dt.datetime.now().isoformat(timespec="seconds"),
        "version": vers.get("landscape", ""),
        "runs": list(data.diagnoses) or [r.name for r in data.runs],
        "claims": _study_table(load_study_table(data.root, "claims"), claims_rows, "claims-table",
                               "From claims.csv, written by the study: each claim, the evidence, its value and "
                               "whether it holds by the study's stated rule."),
        "methods": _table(*method_rows(data.diagnoses), table_id="best-last-table",
                          caption="Best epoch (the official rule: highest robust test accuracy, the latest "
                                  "epoch on ties; from the training log when present) and last epoch of each run, "
                                  "mean ± sd over the method's runs; RO gap = best − last robust accuracy."),
        "final_eval": final,
        "ranking": _table(*ranking, table_id="ranking-table",
                          caption="Each measure's Spearman ρ with the test robust loss over the epochs from the "
                                  "best one on, gathered over the runs that robust-overfit (an onset in their "
                                  "diagnosis) and ranked by |mean ρ|: ρ > 0, the measure rises as robust accuracy "
                                  "falls; ρ < 0, it falls. 'same sign': the share of runs agreeing with the "
                                  "mean's sign.") if ranking[1] else None,
        "ranking_title": ("Weight vs input landscape: which tracks robust overfitting" if spaces == {"input", "weight"}
                          else "Which measure tracks robust overfitting"),
        "findings": findings,
        "findings_images": [{"path": p, "rel": os.path.relpath(p, out).replace(os.sep, "/")}
                            for p in findings.images],
        "comparison": [f for f in figs if f["section"] == "comparison"],
        "detail": [f for f in figs if f["section"] == "detail"],
        "diagnosis": _table(*diagnosis_rows(data.diagnoses), table_id="diagnosis-table"),
        "spearman": _table(*corr) if corr[1] else None,
        "pearson": _table(*correlation_rows(data.diagnoses, "pearson")) if corr[1] else None,
        "notes": notes,
        "settings": [{"run": run, "name": name, "value": value}
                     for run, files in data.settings.items() for name, value in files.items()],
        "versions": list(vers.items()),
        "interactive": any(f["interactive"] for f in figs),
    }


#: attribution table columns shown, with their headers
_ATTRIBUTION_COLUMNS = [("rank", "rank"), ("sample_id", "sample id"), ("label", "label (trained on)"),
                        ("memorisation", "robust-loss drop after best"), ("curvature_growth", "curvature growth"),
                        ("learning_epoch", "learning epoch")]


def _attribution_entry(entry: dict[str, Any], out: Path, dpi: int) -> dict[str, Any]:
    table = entry["table"]
    shown = [(c, h) for c, h in _ATTRIBUTION_COLUMNS if table is not None and c in table.columns]
    rows = [] if table is None else [[("—" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v))
                                      for v in rec] for rec in table[[c for c, _ in shown]].itertuples(index=False)]
    return {"run": entry["run"], "skipped": entry["skipped"],
            "figure": _figure(entry["figure"], out, dpi) if entry["figure"] is not None else None,
            "table": _table([h for _, h in shown], rows, caption="Ranked by the combined attribution rank "
                            "(mean of the per-score ranks; docs/attribution.md)") if table is not None else None}


def _data_uri(path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def environment(kind: str) -> jinja2.Environment:
    """The Jinja environment of the ``html`` or ``md`` template (templates ship with the package)."""
    import json

    env = jinja2.Environment(loader=jinja2.PackageLoader("landscape.report", "templates"),
                             autoescape=kind == "html", trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(data_uri=_data_uri, md=_md_cell,
                       json=lambda v: json.dumps(v, indent=2, default=str))
    env.globals["plotly_js"] = plotly_js
    return env


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, dpi: int = 150,
                 progress: bool = False, title: str | None = None, interactive: bool = True) -> Path:
    """Write ``report.html``, ``report.md`` and ``figures/*.png`` for the run(s) under ``run_dir``.

    The page opens with the comparison: RUN_DIR's ``claims.csv`` (when present), the best/last table per
    method (runs named ``<method>/<seed>`` averaged over seeds), ``final_eval.csv`` (when present) and the
    study's findings; then the figures per method (mean over seeds with a seed band, best vs last side by
    side, interactive where Plotly can show run/epoch/value on hover); per-run figures, the per-run diagnosis
    and correlations are collapsed in ``<details>``.

    Args:
        run_dir: one run directory (``trajectory.parquet`` [+ the other files of
            :data:`landscape.runs.RUN_FILES`], possibly in an ``analysis/`` subfolder) or a folder whose
            subfolders (one or two levels down) are runs.
        out: output folder (default ``<run_dir>/report``), created if needed.
        dpi: resolution of the figure PNGs (>= 72).
        progress: show a progress bar over the figures.
        title: report title (default "landscape report: <run_dir name>").
        interactive: embed the interactive Plotly charts (plotly.js inlined once, about 4.6 MB).

    Returns:
        Path of ``report.html`` (``report.md`` and ``figures/`` beside it).

    Raises:
        LandscapeError: no ``trajectory.parquet`` under ``run_dir`` (names the folder), or it is unreadable.
        PermissionError: ``out`` cannot be created or written.

    Example:
        >>> build_report("runs/demo")   # doctest: +SKIP
        PosixPath('runs/demo/report/report.html')
    """
    if not isinstance(dpi, int) or dpi < 72:
        raise ValueError(f"dpi must be an integer >= 72, got {dpi!r}")
    data = load_runs(run_dir)
    out_dir = Path(out) if out is not None else Path(run_dir) / "report"
    try:
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create report folder {out_dir}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"report folder {out_dir} is not writable")
    figures = render_figures(data, out_dir / "figures", dpi=dpi, progress=progress, interactive=interactive)
    findings = load_findings(run_dir, out_dir / "figures")
    title = title or f"landscape report: {Path(run_dir).resolve().name}"
    context = report_context(data, figures, findings, out_dir, dpi=dpi, title=title)
    context["attribution"] = [_attribution_entry(e, out_dir, dpi)
                              for e in attribution_figures(data, out_dir / "figures", dpi=dpi)]
    atomic_write_text(out_dir / "report.md", environment("md").get_template("report.md.j2").render(context))
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, environment("html").get_template("report.html.j2").render(context))
    return html_path


__all__ = ["Findings", "build_report", "environment", "load_findings", "report_context"]
