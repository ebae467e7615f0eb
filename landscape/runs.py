"""The run folder: file names, finding runs, reading and combining tables, best/last epoch.

A *run folder* is what ``landscape train`` and ``landscape trajectory`` write and what ``landscape
diagnose``, ``plot`` and ``report`` read. Every file name lives here, so a command that writes a table and
the report that reads it cannot disagree.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd

from ._base import LandscapeError

__all__ = ["RUN_FILES", "RunFiles", "find_runs", "load_tables", "read_table_file", "run_file", "run_names"]

#: Files a run directory may hold (key -> file name); only ``trajectory`` is required.
RUN_FILES = {
    "trajectory": "trajectory.parquet",
    "samples": "samples.parquet",
    "slices_1d": "slices_1d.parquet",
    "slices_2d": "slices_2d.parquet",
    "metrics": "metrics.csv",
    "settings": "settings.json",
    "diagnosis": "diagnosis.json",
    "claims": "claims.csv",          # the demo study's claims table
    "findings": "findings.csv",      # a study's summary table
    "final_eval": "final_eval.csv",  # best/last checkpoints under the final evaluation attack(s)
}
TABLES = ("trajectory", "samples", "slices_1d", "slices_2d", "metrics")


def run_file(key: str) -> str:
    """The file name that run-folder entry ``key`` (a key of :data:`RUN_FILES`) is stored under."""
    try:
        return RUN_FILES[key]
    except KeyError:
        raise ValueError(f"unknown run file {key!r}; known: {sorted(RUN_FILES)}") from None


@dataclasses.dataclass
class RunFiles:
    """One run found on disk: its name, folder and the files present (key of :data:`RUN_FILES` -> path)."""

    name: str
    folder: Path
    files: dict[str, Path]


def _files_in(folder: Path) -> dict[str, Path]:
    """The run files in ``folder`` or ``folder/analysis`` (the folder itself wins)."""
    found = {}
    for key, name in RUN_FILES.items():
        for place in (folder, folder / "analysis"):
            if (place / name).is_file():
                found[key] = place / name
                break
    return found


def find_runs(run_dir: str | os.PathLike) -> list[RunFiles]:
    """Runs under ``run_dir``: the folder itself, else its subfolders one or two levels down.

    A run is a folder holding ``trajectory.parquet`` directly or in ``analysis/``. A single run is named
    after its folder (the parent's name for an ``analysis`` folder); runs found in subfolders are named by
    their path relative to ``run_dir`` (e.g. ``pgd_at`` or ``demo/pgd_at``).

    Raises:
        LandscapeError: ``run_dir`` does not exist or holds no ``trajectory.parquet`` anywhere searched.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise LandscapeError(f"run directory {root} does not exist (or is not a folder)")
    files = _files_in(root)
    if "trajectory" in files:
        return [RunFiles(_run_name(root), root, files)]
    runs: list[RunFiles] = []
    for sub in _subdirs(root):
        files = _files_in(sub)
        if "trajectory" in files:
            runs.append(RunFiles(sub.name, sub, files))
            continue
        for subsub in _subdirs(sub):
            if subsub.name == "analysis":
                continue
            files = _files_in(subsub)
            if "trajectory" in files:
                runs.append(RunFiles(f"{sub.name}/{subsub.name}", subsub, files))
    if not runs:
        raise LandscapeError(f"no trajectory.parquet in {root} (nor in its analysis/ folder or in subfolders "
                             "one or two levels down); run `landscape trajectory` to write one")
    return runs


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError:
        return []


def read_table_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``.parquet`` or ``.csv`` table.

    Raises:
        FileNotFoundError: no such file.
        LandscapeError: it cannot be read as a table (names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such table file: {p}")
    try:
        if p.suffix.lower() == ".csv":
            return pd.read_csv(p)
        if p.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LandscapeError(f"cannot read {p} as a table: {first}") from None
    raise LandscapeError(f"cannot read {p}: expected a .parquet or .csv file")


def _with_run(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """Set ``run`` to ``name`` unless the table already holds several runs (then prefix them)."""
    table = table.copy()
    if "run" in table.columns and table["run"].nunique(dropna=True) > 1:
        table["run"] = name + "/" + table["run"].astype(str)
    else:
        table["run"] = name
    return table


def _run_name(folder: Path) -> str:
    folder = folder.resolve()
    return (folder.parent.name if folder.name == "analysis" else folder.name) or "run"


def run_names(paths) -> list[str]:
    """The run names :func:`load_tables` gives several ``paths`` (files or run folders): each run folder's name,
    or the given path when names collide (e.g. ``pgd_at/s0`` and ``at_advlc/s0``), the same for every key."""
    paths = [Path(p) for p in paths]
    names = [_run_name(p if p.is_dir() else p.parent) for p in paths]
    if len(set(names)) < len(names):
        names = [str(p if p.is_dir() else p.parent) for p in paths]
    return names


def load_tables(paths, key: str = "trajectory") -> pd.DataFrame:
    """Read and combine tables given as files or run directories, with a ``run`` column.

    Args:
        paths: ``.parquet``/``.csv`` files, or run directories (then the ``key`` file of :data:`RUN_FILES`
            is read from the folder or its ``analysis/`` subfolder; for ``trajectory``, ``metrics.csv`` is
            used when there is no ``trajectory.parquet``).
        key: which run file a directory stands for.

    Returns:
        One table. A single path keeps its own ``run`` column; several paths get ``run`` set to their run
        folder's name (or the given path, when names collide).

    Raises:
        ValueError: ``key`` unknown or no paths. FileNotFoundError: a path, or the file in a directory,
        is missing. LandscapeError: a file cannot be read.
    """
    if key not in TABLES:
        raise ValueError(f"key must be one of {list(TABLES)}, got {key!r}")
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise ValueError("load_tables: give at least one table file or run directory")
    files = []
    for p in paths:
        if p.is_dir():
            found = _files_in(p)
            file = found.get(key) or (found.get("metrics") if key == "trajectory" else None)
            if file is None:
                raise FileNotFoundError(f"no {RUN_FILES[key]} in {p} (nor in {p / 'analysis'})")
            files.append((file, _run_name(p)))
        elif p.is_file():
            files.append((p, _run_name(p.parent)))
        else:
            raise FileNotFoundError(f"no such file or run directory: {p}")
    tables = [read_table_file(f) for f, _ in files]
    if len(tables) == 1:
        return tables[0]
    names = run_names(paths)
    combined = pd.concat([_with_run(t, n) for t, n in zip(tables, names)], ignore_index=True)
    combined.attrs = dict(tables[0].attrs)
    return combined

