"""Per-sample histories: one compact long table of every sample's measures at every analysed epoch.

``write_histories(run_dir)`` reads the per-checkpoint result files (``results/<key>.parquet``, written and
cached by :func:`~landscape.trajectory.analyse_trajectory`) one at a time, in epoch order, and streams the rows
of the chosen splits into ``histories.parquet`` (one Parquet row group per checkpoint, written atomically), so
memory holds one checkpoint's rows at a time, never the whole history.

Columns (one row per sample, epoch and split):

| column | type | meaning |
|---|---|---|
| ``sample_id`` | int64 | the sample's index in the dataset the split was opened from (through any subset: the same id at every epoch, whichever stratified subset ``n`` selected) |
| ``epoch`` | int32 | the epoch as the trainer numbered it |
| ``split`` | category | ``train`` / ``test`` |
| ``label`` | int16 | the label the measures used: the label the data source gives (for data passed in memory, the labels as trained on, e.g. noisy ones) |
| ``loss_clean``, ``loss_adv`` | float32 | cross-entropy at x and at x_adv |
| ``correct_clean``, ``correct_adv`` | bool | prediction equals ``label`` |
| measure columns | float32 | every measure of the run, e.g. ``grad_l1`` (input-gradient norm), ``curv_adv`` (curvature along the adversarial direction), ``margin_clean``, ``margin_adv`` (measure ``logit_margin``) |

Size: about 25 bytes per sample-epoch for the columns above with ``grad``, ``curv_adv`` and ``logit_margin``
(``benchmarks/bench_attribution.py``; docs/attribution.md gives the measured numbers).
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._base import LandscapeError
from .._io import atomic_write
from ..runs import Run, run_file
from .settings import SPLITS, TrajectoryWarning

__all__ = ["HISTORIES_FILE", "compact_rows", "history_sources", "read_histories", "write_histories"]

#: file name of the per-sample history table inside a run folder
HISTORIES_FILE = run_file("histories")

_DROP = ("sample", "checkpoint")  # position in the evaluated subset and path: not part of a history
_BOOL = ("correct_clean", "correct_adv")


def compact_rows(rows: pd.DataFrame, epoch: int) -> pd.DataFrame:
    """One checkpoint's per-sample rows in the history schema (see the module docstring): ids as int64, epoch
    int32, label int16, booleans kept, every other numeric column float32, ``split`` categorical."""
    if "sample_id" not in rows.columns:
        raise LandscapeError("these results have no sample_id column (written before per-sample ids existed): "
                             "re-run `landscape trajectory` on this run folder to recompute them")
    out = pd.DataFrame({"sample_id": rows["sample_id"].to_numpy(np.int64),
                        "epoch": np.full(len(rows), int(epoch), dtype=np.int32),
                        "split": pd.Categorical(rows["split"].astype(str), categories=list(SPLITS)),
                        "label": rows["label"].to_numpy(np.int16)})
    for c in rows.columns:
        if c in out.columns or c in _DROP or c == "epoch":
            continue
        v = rows[c]
        if c in _BOOL or pd.api.types.is_bool_dtype(v):
            out[c] = v.to_numpy(bool)
        elif pd.api.types.is_numeric_dtype(v):
            out[c] = v.to_numpy(np.float32)
    return out


def history_sources(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(epoch, result file)`` of every checkpoint result of the run's current settings, sorted by epoch; one
    file per epoch (a duplicated epoch keeps the first file by name, with a warning).

    Raises:
        LandscapeError: no trajectory results in ``run_dir``.
    """
    import pyarrow.parquet as pq

    from .store import read_result_meta

    folder = Path(run_dir)
    results = folder / "results"
    settings_file = folder / "settings.json"
    current = json.loads(settings_file.read_text()).get("settings") if settings_file.is_file() else None
    files = sorted(results.glob("*.parquet")) if results.is_dir() else []
    if not files:
        raise LandscapeError(f"no trajectory results in {folder} (expected {results}/*.parquet: run "
                             "`landscape trajectory CHECKPOINTS --out RUN_DIR` first)")
    found: dict[int, Path] = {}
    for path in files:
        meta = read_result_meta(path)
        if meta is None or (current is not None and meta.get("settings") != current):
            continue  # a foreign or stale file (older settings): not this run's
        epochs = pq.read_table(path, columns=["epoch"]).column("epoch").to_pandas().dropna().unique()
        if len(epochs) != 1:
            continue
        epoch = int(epochs[0])
        if epoch in found:
            warnings.warn(f"epoch {epoch} appears twice ({found[epoch].name}, {path.name}); keeping "
                          f"{found[epoch].name}", TrajectoryWarning, stacklevel=2)
            continue
        found[epoch] = path
    if not found:
        raise LandscapeError(f"no result in {results} matches the run's settings.json (re-run the trajectory)")
    return sorted(found.items())


def write_histories(run_dir: str | os.PathLike, *, splits: Sequence[str] = ("train",),
                    out: str | os.PathLike | None = None) -> Path:
    """Stream the run's per-checkpoint results into the long per-sample history table.

    Args:
        run_dir: a folder written by :func:`~landscape.trajectory.analyse_trajectory`.
        splits: which splits to keep (default the training split: attribution ranks training samples).
        out: file to write; default ``run_dir/histories.parquet``.

    Returns:
        The path written. Memory: one checkpoint's rows at a time.

    Raises:
        LandscapeError: no results, or results without sample ids.
        ValueError: an unknown split.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .store import read_result

    splits = [splits] if isinstance(splits, str) else list(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"splits must be some of {SPLITS}, got {splits!r}")
    sources = history_sources(run_dir)
    target = Path(out) if out is not None else Path(run_dir) / HISTORIES_FILE

    def write(tmp: Path) -> None:
        writer = None
        try:
            for epoch, path in sources:
                rows, _ = read_result(path)
                rows = rows[rows["split"].isin(splits)]
                if rows.empty:
                    continue
                table = pa.Table.from_pandas(compact_rows(rows, epoch), preserve_index=False)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                writer.write_table(table.cast(schema))
            if writer is None:
                raise LandscapeError(f"no {' or '.join(splits)} rows in the results of {run_dir} (was the split "
                                     "measured? `landscape trajectory --splits train test`)")
        finally:
            if writer is not None:
                writer.close()

    return atomic_write(target, write)


def _lacks(file: Path, splits: Sequence[str] | None) -> bool:
    """Whether the history file ``file`` has no rows of some split in ``splits``."""
    if not splits:
        return False
    present = set(pd.read_parquet(file, columns=["split"])["split"].astype(str))
    return not set(splits) <= present


def read_histories(source: str | os.PathLike | pd.DataFrame, *, splits: Sequence[str] | None = ("train",),
                   build: bool = True) -> pd.DataFrame:
    """The history table of a run folder or training run folder (``histories.parquet`` beside its
    ``trajectory.parquet``, built from ``results/`` for every measured split when missing, or when it lacks one of
    ``splits``, and ``build``), of a ``.parquet``/``.csv`` file, or a DataFrame given as is; rows of ``splits`` only (None: all)."""
    if isinstance(source, pd.DataFrame):
        table = source
    else:
        path = Path(source)
        if path.is_dir():
            trajectory = Run(path).find("trajectory")  # the run folder itself, or its analysis/ folder
            folder = trajectory.parent if trajectory is not None else path
            file = folder / HISTORIES_FILE
            if not file.is_file() and not build:
                raise LandscapeError(f"no {HISTORIES_FILE} in {folder}")
            if build and (not file.is_file() or _lacks(file, splits)):
                write_histories(folder, splits=SPLITS)  # every measured split: the file serves any later ask
            path = file
        if not path.is_file():
            raise LandscapeError(f"no such run folder or table: {path}")
        table = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    if splits is not None and "split" in table.columns:
        table = table[table["split"].astype(str).isin(list(splits))]
    return table.reset_index(drop=True)
