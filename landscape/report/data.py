"""What the report reads: the runs' tables, settings and diagnoses, and the study files of RUN_DIR itself
(``claims.csv``, ``findings.csv`` + ``findings*.png``, ``final_eval.csv``)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from .._base import LandscapeError
from ..runs import TABLES, Run, RunFiles, _with_run, find_runs, read_table_file, run_file


@dataclasses.dataclass
class ReportData:
    """Everything the report shows: combined tables (with ``run``), per-run JSON, diagnoses and notes."""

    root: Path
    runs: list[RunFiles]
    tables: dict[str, pd.DataFrame | None]
    settings: dict[str, dict[str, Any]]  # run -> {settings file relative to the run folder: contents}
    diagnoses: dict[str, dict[str, Any]]
    notes: list[str]
    final_eval: pd.DataFrame | None = None  # every run's final_eval.csv (and RUN_DIR's), with ``run``

    def best_last(self) -> dict[str, dict[str, int]]:
        """Per run ``{"best": epoch, "last": epoch}`` from the diagnoses (runs without one left out)."""
        out = {}
        for run, d in self.diagnoses.items():
            if d.get("best_epoch") is not None and d.get("last_epoch") is not None:
                out[run] = {"best": int(d["best_epoch"]), "last": int(d["last_epoch"])}
        return out


def load_runs(run_dir: str | os.PathLike) -> ReportData:
    """Find, read and combine the runs under ``run_dir`` (see :func:`landscape.runs.find_runs`), and diagnose
    each run.

    Unreadable optional files become notes; an unreadable trajectory table raises LandscapeError.
    """
    runs = find_runs(run_dir)
    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in TABLES}
    settings: dict[str, Any] = {}
    notes: list[str] = []
    per_run_traj: dict[str, pd.DataFrame] = {}
    saved: dict[str, Any] = {}  # diagnosis.json per run, the fallback when diagnose() fails
    finals: list[pd.DataFrame] = []
    owners = {r.name: Run(r.folder, name=r.name) for r in runs}  # each run's table read once, diagnosis too
    for r in runs:
        for key in (*TABLES, "final_eval"):
            path = r.files.get(key)
            if path is None:
                continue
            try:
                raw = owners[r.name].trajectory() if key == "trajectory" else read_table_file(path)
                table = _with_run(raw, r.name)
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
            if key == "final_eval":
                finals.append(table)
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
            if path.name == run_file("diagnosis"):
                saved[r.name] = value
            else:  # training and analysis settings side by side when a run has both
                settings.setdefault(r.name, {})[path.relative_to(r.folder).as_posix()] = value
    tables = {k: (pd.concat(v, ignore_index=True) if v else None) for k, v in parts.items()}
    for key in TABLES[1:]:  # attrs (e.g. slice normalisation) survive concat only when equal; keep the first
        if tables[key] is not None and parts[key]:
            tables[key].attrs = dict(parts[key][0].attrs)
    diagnoses = {}
    for r in runs:
        traj = per_run_traj.get(r.name)
        groups = [] if traj is None else list(traj.groupby("run", sort=False))
        for name, part in groups:  # one run: the Run's diagnosis (with its training log, which belongs to one run)
            run = owners[r.name] if len(groups) == 1 else None
            diagnoses[str(name)] = _diagnosis(part, saved.get(r.name), str(name), notes, run)
    final = _root_final_eval(Path(run_dir), runs, notes)
    if final is not None:
        finals.insert(0, final)
    final_eval = pd.concat(finals, ignore_index=True) if finals else None
    return ReportData(Path(run_dir), runs, tables, settings, diagnoses, notes, final_eval)


def _root_final_eval(root: Path, runs: list[RunFiles], notes: list[str]) -> pd.DataFrame | None:
    """RUN_DIR's own final_eval.csv when RUN_DIR is a folder of runs (a single run's is read with the run)."""
    path = root / run_file("final_eval")
    if not path.is_file() or any(r.folder.resolve() == root.resolve() for r in runs):
        return None
    try:
        table = read_table_file(path)
    except LandscapeError as exc:
        notes.append(str(exc))
        return None
    if "run" not in table.columns:
        table.insert(0, "run", root.resolve().name)
    return table


def _json_files(r: RunFiles) -> list[Path]:
    """The run's diagnosis.json and every settings.json (the folder's and its analysis/ folder's)."""
    name = run_file("settings")
    found = [p for p in (r.folder / name, r.folder / "analysis" / name) if p.is_file()]
    if "diagnosis" in r.files:
        found.append(r.files["diagnosis"])
    return found


def _diagnosis(traj: pd.DataFrame, saved: Any, name: str, notes: list[str], run: Run | None = None) -> dict[str, Any]:
    """The run's diagnosis (:func:`landscape.diagnose.diagnosis_of`, with its training log), or
    ``diagnose(traj)`` for one of several runs in a table; else the saved diagnosis.json; else ``{"error": ...}``."""
    try:
        from ..diagnose import diagnose, diagnosis_of

        d = diagnose(traj.assign(run=name)) if run is None else diagnosis_of(run)
        return {**d.to_dict(), "run": name}
    except (ImportError, LandscapeError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(saved, dict) and "error" not in saved and "best_epoch" in saved:
        notes.append(f"{name}: diagnosis read from diagnosis.json ({reason})")
        return saved
    notes.append(f"{name}: no diagnosis ({reason})")
    return {"error": reason}


# --------------------------------------------------------------------------------- study files of RUN_DIR

#: Images of RUN_DIR itself (or RUN_DIR/figures) shown with the findings.
FINDINGS_IMAGES = ("findings.png", "findings_*.png")


@dataclasses.dataclass
class StudyTable:
    """A table of RUN_DIR itself (claims, findings): its source and the table, or a note why it is unusable."""

    source: Path | None = None
    table: pd.DataFrame | None = None
    note: str | None = None

    def __bool__(self) -> bool:
        return self.table is not None or self.note is not None


def load_study_table(run_dir: str | os.PathLike, key: str) -> StudyTable:
    """RUN_DIR's ``key`` file (``claims`` or ``findings``), if any; an unreadable or empty one becomes a note."""
    path = Path(run_dir) / run_file(key)
    if not path.is_file():
        return StudyTable()
    try:
        table = read_table_file(path)
    except LandscapeError as exc:
        return StudyTable(path, None, str(exc).splitlines()[0])
    if table.empty:
        return StudyTable(path, None, f"{path.name} has no rows")
    return StudyTable(path, table)


def findings_images(run_dir: str | os.PathLike, fig_dir: Path | None = None) -> list[Path]:
    """RUN_DIR's ``findings.png`` / ``findings_*.png`` (in RUN_DIR or RUN_DIR/figures, sorted by name),
    copied into ``fig_dir`` when given so that report.md can link them."""
    root = Path(run_dir)
    images: dict[str, Path] = {}
    for place in (root / "figures", root):
        for pattern in FINDINGS_IMAGES:
            for p in sorted(place.glob(pattern)):
                if p.is_file():
                    images.setdefault(p.name, p)
    out = []
    for name in sorted(images):
        src = images[name]
        if fig_dir is not None:
            dst = fig_dir / name
            if not (dst.exists() and dst.resolve() == src.resolve()):
                shutil.copyfile(src, dst)
            src = dst
        out.append(src)
    return out


__all__ = ["ReportData", "StudyTable", "findings_images", "load_runs", "load_study_table"]
