"""A self-contained HTML report (and a Markdown twin, from the same context) of one run or a folder of runs.

``build_report(run_dir)`` finds the run tables (see :mod:`landscape.runs`), diagnoses each run with
:func:`landscape.diagnose.diagnose`, draws every registered figure (:data:`landscape.plotting.FIGURES`) and
renders ``templates/report.html.j2`` and ``templates/report.md.j2`` (Jinja) from one context, writing

* ``report.html`` — the comparison first (claims, best/last per method, final evaluation, findings), then the
  figures per method (interactive Plotly charts, plotly.js inlined once; other figures as base64 PNG), per-run
  detail collapsed; no external requests, works offline;
* ``report.md`` — the same content with relative links to ``figures/*.png``;
* ``figures/*.png`` — the figures.

A figure whose table is missing is skipped with a note in the report, never an error.
"""
from ..diagnose import best_last_epochs
from ..runs import RunFiles, find_runs, load_tables, read_table_file
from .build import Findings, build_report, load_findings, report_context
from .data import ReportData, load_runs
from .tables import correlation_rows, diagnosis_rows, findings_rows, method_rows, versions

__all__ = ["Findings", "ReportData", "RunFiles", "best_last_epochs", "build_report", "correlation_rows",
           "diagnosis_rows", "find_runs", "findings_rows", "load_findings", "load_runs", "load_tables",
           "method_rows", "read_table_file", "report_context", "versions"]
