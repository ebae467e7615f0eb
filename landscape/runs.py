"""The run folder: file names, finding runs, reading and combining tables, best/last epoch.

A *run folder* is what ``landscape train`` and ``landscape trajectory`` write and what ``landscape
diagnose``, ``plot`` and ``report`` read. Every file name lives here, so a command that writes a table and
the report that reads it cannot disagree.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ._base import LandscapeError
from ._io import atomic_write, atomic_write_text

__all__ = ["RUN_FILES", "Run", "RunFiles", "find_runs", "find_training_log", "load_tables", "read_table_file",
           "run_file", "run_names", "write_file"]

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
    "histories": "histories.parquet",  # per-sample, per-epoch rows with stable sample ids (attribution)
    # weight space (`landscape slice --space weights`, the demo's sliced runs; landscape.weight_slices)
    "weight_slices_1d": "weight_slices_1d.parquet",        # probe-set loss along filter-normalised directions
    "weight_slices_2d": "weight_slices_2d.parquet",        # ... on a plane of two directions
    "weight_path": "weight_path.parquet",                  # PCA coordinates of the epochs' weights (--pca)
    "weight_path_variance": "weight_path_variance.parquet",  # explained variance of the components (--pca)
    "weight_path_surface": "weight_path_surface.parquet",  # loss on the PCA plane, with the path's rows (--pca)
}
TABLES = ("trajectory", "samples", "slices_1d", "slices_2d", "metrics", "weight_slices_1d", "weight_path_surface")


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



def write_file(path: str | os.PathLike, value: Any, *, sort_keys: bool = False, attrs: bool = False) -> Path:
    """Write ``value`` to ``path`` atomically (see :func:`landscape._io.atomic_write`), by the file's suffix:
    a DataFrame as ``.parquet`` (no index; its ``attrs`` only with ``attrs=True``, for a table that travels
    without its run folder, e.g. ``landscape measure --out``) or ``.csv`` (no index), anything else as ``.json``
    (indented, ending in a newline; ``sort_keys`` as :func:`json.dumps`). Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return atomic_write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys) + "\n")
    if not isinstance(value, pd.DataFrame):
        raise TypeError(f"{path.name}: a table file takes a DataFrame, got {type(value).__name__}")
    if suffix == ".csv":
        return atomic_write(path, lambda tmp: value.to_csv(tmp, index=False))
    if suffix in (".parquet", ".pq") and attrs:
        return atomic_write(path, lambda tmp: value.to_parquet(tmp, index=False))
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        frame = value.copy()
        frame.attrs = {}  # attrs are run metadata kept in settings.json, not in the table file
        table = pa.Table.from_pandas(frame, preserve_index=False)
        return atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    raise ValueError(f"cannot write {path.name}: expected a .parquet, .csv or .json file")


def find_training_log(*places: str | os.PathLike | None, table: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """The training log (``metrics.csv``) of a run, or None when there is none.

    Looked for in each of ``places`` (a folder, or a file whose folder is searched), in the parent of an
    ``analysis`` folder, then in the single folder holding the checkpoints named by ``table``'s
    ``checkpoint`` column (``landscape train`` writes ``metrics.csv`` beside its checkpoints).

    Raises:
        LandscapeError: a ``metrics.csv`` exists but cannot be read.
    """
    folders: list[Path] = []
    for place in places:
        if place is None:
            continue
        p = Path(place)
        p = p if p.is_dir() else p.parent
        folders += [p, p.parent] if p.name == "analysis" else [p]
    if table is not None and "checkpoint" in table.columns:
        parents = {Path(str(c)).parent for c in table["checkpoint"].dropna().unique()}
        if len(parents) == 1:
            folders.append(parents.pop())
    name = run_file("metrics")
    for folder in folders:
        if (folder / name).is_file():
            log = read_table_file(folder / name)
            log.attrs["source"] = name
            return log
    return None


class Run:
    """One run folder, the one owner of its files: names, where they are, reading and (atomic) writing.

    Files are found in the folder or its ``analysis/`` subfolder (the folder itself wins) and written to
    the folder (``analysis=True``: its ``analysis/`` subfolder). The run's diagnosis is
    :func:`landscape.diagnose.diagnosis_of` ``(run)``: computed once, with the training log, and cached in
    :attr:`diagnosis_cache` (``diagnose`` sits above this module, so the cache lives here and the
    computation there).
    """

    def __init__(self, path: str | os.PathLike, *, name: str | None = None):
        self.folder = Path(path)
        self.name = name if name is not None else _run_name(self.folder)
        #: (split, threshold) -> Diagnosis, filled by :func:`landscape.diagnose.diagnosis_of`.
        self.diagnosis_cache: dict[tuple, Any] = {}
        self._trajectory: pd.DataFrame | None = None  # read once: the diagnosis and the caller share it

    def __repr__(self) -> str:
        return f"Run({str(self.folder)!r}, name={self.name!r})"

    @property
    def files(self) -> dict[str, Path]:
        """The run files present (key of :data:`RUN_FILES` -> path), in the folder or ``analysis/``."""
        return _files_in(self.folder)

    def find(self, key: str) -> Path | None:
        """Where run file ``key`` is (the folder, else ``analysis/``), None when absent."""
        name = run_file(key)
        for place in (self.folder, self.folder / "analysis"):
            if (place / name).is_file():
                return place / name
        return None

    def path(self, key: str, *, analysis: bool = False) -> Path:
        """Where run file ``key`` is written: the folder, or its ``analysis/`` subfolder."""
        return (self.folder / "analysis" if analysis else self.folder) / run_file(key)

    def read(self, key: str) -> Any:
        """Run file ``key``: a DataFrame for a table, the parsed JSON for ``settings``/``diagnosis``.

        Raises:
            FileNotFoundError: the run has no such file. LandscapeError: it cannot be read.
        """
        file = self.find(key)
        if file is None:
            raise FileNotFoundError(f"no {run_file(key)} in {self.folder} (nor in {self.folder / 'analysis'})")
        if file.suffix.lower() == ".json":
            try:
                return json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise LandscapeError(f"cannot read {file}: {str(exc).splitlines()[0]}") from None
        return read_table_file(file)

    def write(self, key: str, value: Any, *, analysis: bool = False, sort_keys: bool = False) -> Path:
        """Write run file ``key`` atomically (see :func:`write_file`), creating the folder; returns its path."""
        path = self.path(key, analysis=analysis)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_file(path, value, sort_keys=sort_keys)

    def trajectory(self) -> pd.DataFrame:
        """The trajectory table, else the training log (``attrs["source"]`` names which file it is); read once
        per ``Run`` (treat it as read-only).

        Raises:
            FileNotFoundError: neither is there. LandscapeError: the file cannot be read.
        """
        if self._trajectory is not None:
            return self._trajectory
        key = "trajectory" if self.find("trajectory") is not None else "metrics"
        if self.find(key) is None:
            raise FileNotFoundError(f"no {run_file('trajectory')} or {run_file('metrics')} in {self.folder} "
                                    f"(nor in {self.folder / 'analysis'})")
        table = self.read(key)
        table.attrs["source"] = run_file(key)
        self._trajectory = table
        return table

    def training_log(self, table: pd.DataFrame | None = None) -> pd.DataFrame | None:
        """The run's ``metrics.csv`` (in the folder, its parent for an ``analysis`` folder, or beside the
        checkpoints ``table`` names), None when there is none; see :func:`find_training_log`."""
        return find_training_log(self.folder, self.folder / "analysis", table=table)

    def markers(self) -> list[dict[str, Any]]:
        """The best-model copies matched to epochs (``settings.json``'s ``markers``, as ``landscape
        trajectory`` reports them; else the trajectory table's ``attrs``); ``[]`` when none are recorded."""
        if self.find("settings") is not None:
            try:
                settings = self.read("settings")
            except LandscapeError:
                settings = {}
            if isinstance(settings, dict) and isinstance(settings.get("markers"), list):
                return list(settings["markers"])
        if self.find("trajectory") is not None:
            return list(self.read("trajectory").attrs.get("markers") or [])
        return []
