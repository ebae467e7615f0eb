"""A self-contained HTML report (and a Markdown twin) of one run or a folder of runs.

``build_report(run_dir)`` finds the run tables (``trajectory.parquet`` and the optional ``samples.parquet``,
``slices_1d.parquet``, ``slices_2d.parquet``, ``metrics.csv``, ``settings.json``, ``diagnosis.json``, each
either in the run folder or in its ``analysis/`` subfolder), diagnoses each run with
:func:`landscape.diagnose.diagnose`, draws every figure with :mod:`landscape.plotting`, and writes

* ``report.html`` — figures embedded as base64 PNG, inline CSS, no external requests;
* ``report.md`` — the same summary with relative links to ``figures/*.png``;
* ``figures/*.png`` — the figures.

A figure whose table is missing is skipped with a note in the report, never an error.

A study may add its own summary: ``RUN_DIR/findings.csv`` is shown as a "Findings" table at the top (pairs
of ``<x>_mean``/``<x>_std`` columns as "mean ± sd"), with the ``findings.png``/``findings_*.png`` images of
``RUN_DIR`` or ``RUN_DIR/figures`` (see :func:`load_findings`).
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import math
import numbers
import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ._base import LandscapeError
from ._io import atomic_write_text
from .runs import TABLES as _TABLES
from .runs import (RUN_FILES, RunFiles, _with_run, best_last_epochs, find_runs, load_tables,  # noqa: F401
                   read_table_file)

__all__ = ["Findings", "RunFiles", "best_last_epochs", "build_report", "find_runs", "findings_rows",
           "load_findings", "load_runs", "load_tables", "read_table_file"]

@dataclasses.dataclass
class ReportData:
    """Everything the report shows: combined tables (with ``run``), per-run JSON, diagnoses and notes."""

    root: Path
    runs: list[RunFiles]
    tables: dict[str, pd.DataFrame | None]
    settings: dict[str, dict[str, Any]]  # run -> {settings file relative to the run folder: contents}
    diagnoses: dict[str, dict[str, Any]]
    notes: list[str]


def load_runs(run_dir: str | os.PathLike) -> ReportData:
    """Find, read and combine the runs under ``run_dir`` (see :func:`find_runs`), and diagnose each run.

    Unreadable optional files become notes; an unreadable trajectory table raises LandscapeError.
    """
    runs = find_runs(run_dir)
    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in _TABLES}
    settings: dict[str, Any] = {}
    notes: list[str] = []
    per_run_traj: dict[str, pd.DataFrame] = {}
    saved: dict[str, Any] = {}  # diagnosis.json per run, the fallback when diagnose() fails
    for r in runs:
        for key in _TABLES:
            path = r.files.get(key)
            if path is None:
                continue
            try:
                table = _with_run(read_table_file(path), r.name)
            except LandscapeError as exc:
                if key == "trajectory":
                    raise
                notes.append(f"{r.name}: {exc}")
                continue
            if table.empty:
                if key == "trajectory":
                    raise LandscapeError(f"{path} has no rows")
                notes.append(f"{r.name}: {path.name} has no rows")
                continue
            parts[key].append(table)
            if key == "trajectory":
                per_run_traj[r.name] = table
        for path in _json_files(r):
            try:
                value = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                notes.append(f"{r.name}: cannot read {path.name}: {str(exc).splitlines()[0]}")
                continue
            if path.name == "diagnosis.json":
                saved[r.name] = value
            else:  # training and analysis settings side by side when a run has both
                settings.setdefault(r.name, {})[path.relative_to(r.folder).as_posix()] = value
    tables = {k: (pd.concat(v, ignore_index=True) if v else None) for k, v in parts.items()}
    for key in _TABLES[1:]:  # attrs (e.g. slice normalisation) survive concat only when equal; keep the first
        if tables[key] is not None and parts[key]:
            tables[key].attrs = dict(parts[key][0].attrs)
    diagnoses = {}
    for r in runs:
        parts = _split_runs(per_run_traj.get(r.name))
        log = _read_log(r, notes) if len(parts) == 1 else None  # a log belongs to one run
        for name, traj in parts:
            diagnoses[name] = _diagnosis(traj, saved.get(r.name), name, notes, log)
    return ReportData(Path(run_dir), runs, tables, settings, diagnoses, notes)


def _json_files(r: RunFiles) -> list[Path]:
    """The run's diagnosis.json and every settings.json (the folder's and its analysis/ folder's)."""
    found = [p for p in (r.folder / "settings.json", r.folder / "analysis" / "settings.json") if p.is_file()]
    if "diagnosis" in r.files:
        found.append(r.files["diagnosis"])
    return found


def _split_runs(table: pd.DataFrame | None):
    if table is None:
        return []
    return [(str(name), part) for name, part in table.groupby("run", sort=False)]


def _read_log(r: RunFiles, notes: list[str]) -> pd.DataFrame | None:
    """The run's training log (the source of its best epoch), None when absent or unreadable (noted)."""
    from .diagnose import read_training_log

    try:
        return read_training_log(r.files.get("metrics"), r.folder)
    except LandscapeError as exc:
        notes.append(f"{r.name}: {exc}")
        return None


def _diagnosis(traj: pd.DataFrame, saved: Any, name: str, notes: list[str],
               log: pd.DataFrame | None = None) -> dict[str, Any]:
    """``diagnose(traj, log=log).to_dict()``; else the saved diagnosis.json; else ``{"error": ...}``."""
    try:
        from .diagnose import diagnose

        return diagnose(traj.assign(run=name), log=log).to_dict()
    except (ImportError, LandscapeError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(saved, dict) and "error" not in saved and "best_epoch" in saved:
        notes.append(f"{name}: diagnosis read from diagnosis.json ({reason})")
        return saved
    notes.append(f"{name}: no diagnosis ({reason})")
    return {"error": reason}


# --------------------------------------------------------------------------------------------- figures

@dataclasses.dataclass
class FigureResult:
    key: str
    title: str
    caption: str
    path: Path | None = None
    skipped: str | None = None


def _best_last(data: ReportData) -> dict[str, dict[str, int]]:
    """Per run ``{"best": epoch, "last": epoch}`` from the diagnoses (runs without one left out)."""
    out = {}
    for run, d in data.diagnoses.items():
        if d.get("best_epoch") is not None and d.get("last_epoch") is not None:
            out[run] = {"best": int(d["best_epoch"]), "last": int(d["last_epoch"])}
    return out


def _label_best_last(table: pd.DataFrame, data: ReportData) -> tuple[pd.DataFrame, str]:
    """Rows of each run's best and last epoch labelled ``best``/``last``, when the table has epochs."""
    from .plotting import label_epochs

    epochs = {r: e for r, e in _best_last(data).items() if (table["run"] == r).any()}
    if "epoch" not in table.columns or not epochs:
        return table, ""
    try:
        return label_epochs(table, epochs), "best vs last epoch"
    except ValueError:
        return table, ""


def _figure_specs(data: ReportData) -> list[tuple[str, str, str, str | None, Callable[[], Any] | None]]:
    """(key, title, caption, reason-if-skipped, draw) for every figure of the report."""
    from . import plotting as P

    t = data.tables
    traj = t["trajectory"]
    specs = []
    specs.append(("learning_curves", "Learning curves (analysed checkpoints)",
                  "Clean and robust accuracy and loss per epoch from trajectory.parquet; the star marks the best "
                  "robust test accuracy and the shaded band the robust-overfitting gap (best − last).",
                  None, lambda: P.plot_learning_curves(traj)))
    metrics = t["metrics"]
    specs.append(("training_curves", "Training curves (metrics.csv)",
                  "The same curves from the training log, every epoch.",
                  None if metrics is not None else "no metrics.csv in any run",
                  (lambda: P.plot_learning_curves(metrics)) if metrics is not None else None))
    measures = P.available_measures(traj)
    specs.append(("measures", "Landscape measures vs epoch",
                  "Per-epoch mean of each measure over samples (with at most two runs, the band is the "
                  "test q10–q90); dotted lines mark each run's best epoch.",
                  None if measures else "the trajectory table has no <measure>_mean columns",
                  (lambda: P.plot_measures(traj)) if measures else None))
    s1 = t["slices_1d"]
    if s1 is not None:
        s1, how = _label_best_last(s1, data)
        specs.append(("slices_1d", "1D loss slices", f"Mean loss ± 1 std over samples along each direction"
                      f"{' — ' + how if how else ''}; a = 0 is the clean input.", None,
                      lambda: P.plot_slices_1d(s1)))
    else:
        specs.append(("slices_1d", "1D loss slices", "", "no slices_1d.parquet in any run", None))
    s2 = t["slices_2d"]
    if s2 is not None:
        s2, how = _label_best_last(s2, data)
        for run, part in s2.groupby("run", sort=False):
            part.attrs = dict(s2.attrs)
            specs.append((f"surface_{_slug(run)}", f"2D loss surface — {run}",
                          f"Loss around the first sample of the slice table{' — ' + how if how else ''}; the "
                          "star is the clean input. Panels share one colour scale.", None,
                          (lambda part=part: P.plot_surface(part))))
    else:
        specs.append(("surface", "2D loss surface", "", "no slices_2d.parquet in any run", None))
    samples = t["samples"]
    cols = [m for m in ("grad_l1", "curv_adv") if samples is not None and m in samples.columns]
    if samples is not None and cols:
        labelled, how = _label_best_last(samples, data)
        specs.append(("distributions", "Per-sample distributions",
                      f"Test-split distribution of {', '.join(cols)} per sample{' — ' + how if how else ''}; "
                      "dashed lines are medians; heavy-tailed positive measures on a log axis.", None,
                      lambda: P.plot_distributions(labelled, cols, log="auto")))
    else:
        why = "no samples.parquet in any run" if samples is None else "samples.parquet has no grad_l1/curv_adv"
        specs.append(("distributions", "Per-sample distributions", "", why, None))
    scatter_m = next((m for m in ("curv_adv", "grad_l1", *measures) if m in measures), None)
    ok = scatter_m is not None and "loss_adv" in traj.columns
    since = {run: e["best"] for run, e in _best_last(data).items()}
    specs.append(("scatter", "Measure vs robust test loss",
                  f"Test mean of {scatter_m} against test robust loss, one point per epoch; Spearman ρ per run "
                  "over the epochs from its best one on (as in the diagnosis), earlier epochs faded.",
                  None if ok else "no measure or no loss_adv column in the trajectory table",
                  (lambda: P.plot_measure_vs_loss(traj, scatter_m, since=since or None)) if ok else None))
    return specs


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(text)) or "run"


def _render(data: ReportData, fig_dir: Path, *, dpi: int, progress: bool) -> list[FigureResult]:
    from tqdm.auto import tqdm

    from .plotting import save_figure

    results = []
    specs = _figure_specs(data)
    for key, title, caption, skipped, draw in tqdm(specs, desc="figures", disable=not progress, leave=False):
        if draw is None:
            results.append(FigureResult(key, title, caption, skipped=skipped))
            continue
        try:
            fig = draw()
        except (ValueError, TypeError, KeyError) as exc:  # a table the figure cannot use: note, go on
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            results.append(FigureResult(key, title, caption, skipped=f"could not draw: {first}"))
            continue
        path = save_figure(fig, fig_dir / key, formats=("png",), dpi=dpi)[0]
        getattr(fig, "figure", fig).clf()  # an Axes-returning function gives its figure
        results.append(FigureResult(key, title, caption, path=path))
    return results


# --------------------------------------------------------------------------------------------- findings

#: Files of RUN_DIR itself (not of a run) that the report shows in its "Findings" section.
FINDINGS_TABLE = "findings.csv"
FINDINGS_IMAGES = ("findings.png", "findings_*.png")  # in RUN_DIR or RUN_DIR/figures


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
    ``findings_*.png`` images (in ``run_dir`` or ``run_dir/figures``, sorted by name; copied into
    ``fig_dir`` when given, so that report.md can link them). An unreadable table becomes ``note``."""
    root = Path(run_dir)
    out = Findings()
    table_path = root / FINDINGS_TABLE
    if table_path.is_file():
        out.source = table_path
        try:
            out.header, out.rows = findings_rows(read_table_file(table_path))
        except (LandscapeError, ValueError) as exc:
            out.note = str(exc).splitlines()[0]
    images: dict[str, Path] = {}
    for place in (root / "figures", root):
        for pattern in FINDINGS_IMAGES:
            for p in sorted(place.glob(pattern)):
                if p.is_file():
                    images.setdefault(p.name, p)
    for name in sorted(images):
        src = images[name]
        if fig_dir is not None:
            dst = fig_dir / name
            if not (dst.exists() and dst.resolve() == src.resolve()):
                shutil.copyfile(src, dst)
            src = dst
        out.images.append(src)
    return out


def findings_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of a findings table.

    Each pair of columns ``<x>_mean`` and ``<x>_std`` (or ``_sd``) becomes one column ``<x>`` of
    "mean ± sd" cells. Numbers get one number of decimals per column, enough for three significant digits
    of its smallest non-zero value (at most 4; none for whole numbers); missing values are "—"; other
    columns are shown as they are.
    """
    if table.empty:
        raise ValueError("findings.csv has no rows")
    cols = [str(c) for c in table.columns]
    table = table.set_axis(cols, axis=1)
    header, cells = [], []
    done: set[str] = set()
    for c in cols:
        if c in done:
            continue
        stem = c[: -len("_mean")] if c.endswith("_mean") else None
        sd = next((stem + s for s in ("_std", "_sd") if stem and stem + s in cols), None)
        if sd is not None:
            done.update((c, sd))
            header.append(stem)
            d = _decimals(table[c])
            cells.append([_mean_sd(m, v, d) for m, v in zip(table[c], table[sd])])
        else:
            done.add(c)
            header.append(c)
            d = _decimals(table[c])
            cells.append([_number(v, d) for v in table[c]])
    return header, [list(row) for row in zip(*cells)]


def _decimals(column: pd.Series) -> int | None:
    """Decimals for a column: three significant digits of its smallest non-zero |value| (0..4); 0 for whole
    numbers; None when it is not numeric."""
    values = pd.to_numeric(column, errors="coerce")
    if column.dtype == bool or values.notna().sum() < column.notna().sum():
        return None
    values = values[values.notna() & (values != 0) & values.abs().lt(float("inf"))].abs()
    if values.empty or (values % 1 == 0).all():
        return 0
    return int(min(4, max(0, 2 - math.floor(math.log10(values.min())))))


def _number(value, decimals: int | None) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    if decimals is None or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        return str(value)
    return f"{float(value):.{decimals}f}"


def _mean_sd(mean, sd, decimals: int | None) -> str:
    if decimals is None:
        return f"{mean} ± {sd}"
    mean, sd = float(mean), float(sd)
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.{decimals}f}" + (f" ± {sd:.{decimals}f}" if math.isfinite(sd) else "")


# --------------------------------------------------------------------------------------------- text parts

#: Diagnosis columns of the summary table: (key, header, formatter).
_DIAG_COLUMNS = [
    ("best_epoch", "best epoch", "int"),
    ("best_acc_adv", "best robust acc (%)", "pct"),
    ("last_epoch", "last epoch", "int"),
    ("last_acc_adv", "last robust acc (%)", "pct"),
    ("gap", "RO gap (pp)", "pp"),
    ("onset_epoch", "RO onset epoch", "int"),
    ("train_test_gap_last", "train − test robust acc, last (pp)", "pp"),
]


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if kind == "int":
        return str(int(value))
    if kind == "pct":
        return f"{100 * float(value):.1f}"
    if kind == "pp":
        return f"{float(value):.1f}"
    return f"{float(value):+.2f}"


def diagnosis_rows(diagnoses: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of the per-run diagnosis table."""
    header = ["run", *[h for _, h, _ in _DIAG_COLUMNS]]
    rows = []
    for run, d in diagnoses.items():
        if "error" in d:
            rows.append([run, *["—"] * len(_DIAG_COLUMNS)])
        else:
            rows.append([run, *[_fmt(d.get(k), kind) for k, _, kind in _DIAG_COLUMNS]])
    return header, rows


def correlation_rows(diagnoses: dict[str, dict[str, Any]], stat: str = "spearman"
                     ) -> tuple[list[str], list[list[str]]]:
    """Compact correlation table: one row per (run, split), one column per measure (``stat`` values)."""
    measures: list[str] = []
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for run, d in diagnoses.items():
        for rec in d.get("correlations") or []:
            m, split = str(rec.get("measure")), str(rec.get("split"))
            if m not in measures:
                measures.append(m)
            cells.setdefault((run, split), {})[m] = f"{_fmt(rec.get(stat), 'corr')} (n={rec.get('n', '—')})"
    header = ["run", "split", *measures]
    rows = [[run, split, *[c.get(m, "—") for m in measures]] for (run, split), c in cells.items()]
    return header, rows


def versions() -> dict[str, str]:
    """Versions of landscape and its main dependencies, Python and the platform (no imports of torch)."""
    out = {}
    for pkg in ("landscape", "torch", "numpy", "pandas", "matplotlib", "seaborn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["python"] = sys.version.split()[0]
    out["platform"] = platform.platform()
    return out


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;color:#1b1f24;
background:#fafafa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:1.2rem 1.6rem 3rem}
h1{font-size:1.6rem;margin:.4rem 0 .2rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem}h3{font-size:1.05rem;margin:1.4rem 0 .4rem}
.meta{color:#555;font-size:.9rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem;background:#fff}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:right}th{background:#f0f3f6}
td:first-child,th:first-child{text-align:left}
figure{margin:1rem 0 1.8rem;background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:.8rem}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.88rem;color:#444;margin-top:.5rem}
.skipped{color:#8a6d00;background:#fff8e1;border:1px solid #f0d98a;border-radius:4px;padding:.4rem .7rem;
font-size:.9rem}
pre{background:#f3f4f6;padding:.7rem;border-radius:4px;overflow-x:auto;font-size:.8rem}
ul.notes{font-size:.9rem;color:#444}
nav a{margin-right:.9rem;font-size:.9rem;color:#0b5cad}
.scroll{overflow-x:auto}#findings-table{font-size:.85rem}#findings-table td{white-space:nowrap}
#findings-table th,#findings-table td{padding:.3rem .4rem}
"""


def _html_table(header: list[str], rows: list[list[str]], table_id: str | None = None) -> str:
    attr = f" id='{html.escape(table_id)}'" if table_id else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _run_notes(data: ReportData) -> list[str]:
    notes = list(data.notes)
    for run, d in data.diagnoses.items():
        notes += [f"{run}: {n}" for n in d.get("notes") or []]
    return notes


def _findings_caption(f: Findings, image: Path | None = None) -> str:
    if image is not None:
        return f"{image.name}, as the study wrote it (not drawn by the report)."
    return (f"From {f.source.name}, written by the study itself; a column shown as mean ± sd joins its "
            "<x>_mean and <x>_std columns.")


def _html_findings(f: Findings) -> list[str]:
    if not f:
        return []
    e = html.escape
    parts = ["<h2 id='findings'>Findings</h2>"]
    if f.note:
        parts.append(f"<p class='skipped'>{e(f.source.name if f.source else FINDINGS_TABLE)}: {e(f.note)}</p>")
    if f.rows:
        parts += ["<div class='scroll'>" + _html_table(f.header, f.rows, table_id="findings-table") + "</div>",
                  f"<p class='meta'>{e(_findings_caption(f))}</p>"]
    for image in f.images:
        b64 = base64.b64encode(image.read_bytes()).decode("ascii")
        parts.append(f"<figure><img src='data:image/png;base64,{b64}' alt='{e(image.stem)}' "
                     f"data-findings='{e(image.stem)}'><figcaption>{e(_findings_caption(f, image))}"
                     "</figcaption></figure>")
    return parts


def _md_findings(f: Findings, out: Path) -> list[str]:
    if not f:
        return []
    lines = ["## Findings", ""]
    if f.note:
        lines += [f"*{f.source.name if f.source else FINDINGS_TABLE}: {f.note}*", ""]
    if f.rows:
        lines += [_md_table(f.header, f.rows), "", _findings_caption(f), ""]
    for image in f.images:
        rel = os.path.relpath(image, out).replace(os.sep, "/")
        lines += [f"![{image.stem}]({rel})", "", _findings_caption(f, image), ""]
    return lines


def _write_html(path: Path, data: ReportData, figures: list[FigureResult], vers: dict[str, str],
                title: str, findings: Findings | None = None) -> None:
    findings = findings or Findings()
    e = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{e(title)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{e(title)}</h1>",
             f"<p class='meta'>{len(data.runs)} run(s): {e(', '.join(data.diagnoses) or ', '.join(r.name for r in data.runs))}"
             f" · generated {e(_dt.datetime.now().isoformat(timespec='seconds'))} by landscape "
             f"{e(vers['landscape'])}</p>",
             "<nav>" + ("<a href='#findings'>Findings</a>" if findings else "") +
             "<a href='#diagnosis'>Diagnosis</a><a href='#figures'>Figures</a>"
             "<a href='#settings'>Settings</a><a href='#versions'>Versions</a></nav>",
             *_html_findings(findings),
             "<h2 id='diagnosis'>Diagnosis</h2>",
             _html_table(*diagnosis_rows(data.diagnoses), table_id="diagnosis-table")]
    header, rows = correlation_rows(data.diagnoses)
    if rows:
        parts += ["<h3>Spearman ρ of each measure with the test robust loss, epochs from the best one on</h3>",
                  _html_table(header, rows),
                  "<details><summary>Pearson r</summary>",
                  _html_table(*correlation_rows(data.diagnoses, "pearson")), "</details>"]
    notes = _run_notes(data)
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2 id='figures'>Figures</h2>")
    for f in figures:
        parts.append(f"<h3 id='fig-{e(f.key)}'>{e(f.title)}</h3>")
        if f.path is None:
            parts.append(f"<p class='skipped'>Skipped: {e(f.skipped or '')}</p>")
            continue
        b64 = base64.b64encode(f.path.read_bytes()).decode("ascii")
        parts.append(f"<figure><img src='data:image/png;base64,{b64}' alt='{e(f.title)}' "
                     f"data-figure='{e(f.key)}'><figcaption>{e(f.caption)}</figcaption></figure>")
    parts.append("<h2 id='settings'>Settings</h2>")
    if not data.settings:
        parts.append("<p class='skipped'>No settings.json in any run.</p>")
    for run, files in data.settings.items():
        for name, value in files.items():
            # collapsed: with a dozen runs the JSON would otherwise fill half the page
            parts.append(f"<details><summary>{e(run)}: {e(name)}</summary>"
                         f"<pre>{e(json.dumps(value, indent=2, default=str))}</pre></details>")
    parts.append("<h2 id='versions'>Versions</h2>")
    parts.append(_html_table(["component", "version"], [[k, v] for k, v in vers.items()]))
    parts.append("</main></body></html>")
    atomic_write_text(path, "\n".join(parts))


def _write_md(path: Path, data: ReportData, figures: list[FigureResult], vers: dict[str, str],
              title: str, findings: Findings | None = None) -> None:
    out = path.parent
    lines = [f"# {title}", "", f"{len(data.runs)} run(s): {', '.join(data.diagnoses)}", "",
             *_md_findings(findings or Findings(), out), "## Diagnosis", "",
             _md_table(*diagnosis_rows(data.diagnoses)), ""]
    header, rows = correlation_rows(data.diagnoses)
    if rows:
        lines += ["### Spearman ρ of each measure with the test robust loss, epochs from the best one on", "",
                  _md_table(header, rows), ""]
    notes = _run_notes(data)
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    lines += ["## Figures", ""]
    for f in figures:
        lines.append(f"### {f.title}")
        lines.append("")
        if f.path is None:
            lines.append(f"*Skipped: {f.skipped}*")
        else:
            rel = os.path.relpath(f.path, out).replace(os.sep, "/")
            lines += [f"![{f.title}]({rel})", "", f.caption]
        lines.append("")
    lines += ["## Settings", ""]
    if not data.settings:
        lines += ["No settings.json in any run.", ""]
    for run, files in data.settings.items():
        for name, value in files.items():
            lines += [f"### {run}: {name}", "", "```json", json.dumps(value, indent=2, default=str), "```", ""]
    lines += ["## Versions", "", _md_table(["component", "version"], [[k, v] for k, v in vers.items()]), ""]
    atomic_write_text(path, "\n".join(lines))


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, dpi: int = 150,
                 progress: bool = False, title: str | None = None) -> Path:
    """Write ``report.html``, ``report.md`` and ``figures/*.png`` for the run(s) under ``run_dir``.

    Args:
        run_dir: one run directory (``trajectory.parquet`` [+ ``samples.parquet``, ``slices_1d.parquet``,
            ``slices_2d.parquet``, ``metrics.csv``, ``settings.json``, ``diagnosis.json``], possibly in an
            ``analysis/`` subfolder) or a folder whose subfolders (one or two levels down) are runs.
        out: output folder (default ``<run_dir>/report``), created if needed.
        dpi: resolution of the figure PNGs (>= 72).
        progress: show a progress bar over the figures.
        title: report title (default "landscape report: <run_dir name>").

    When ``run_dir`` holds ``findings.csv`` and/or ``findings.png``/``figures/findings_*.png``, they open the
    report as its "Findings" section (:func:`load_findings`); the images are copied into ``out/figures``.

    Returns:
        Path of ``report.html``.

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
    figures = _render(data, out_dir / "figures", dpi=dpi, progress=progress)
    findings = load_findings(run_dir, out_dir / "figures")
    vers = versions()
    title = title or f"landscape report: {Path(run_dir).resolve().name}"
    _write_md(out_dir / "report.md", data, figures, vers, title, findings)
    html_path = out_dir / "report.html"
    _write_html(html_path, data, figures, vers, title, findings)
    return html_path
