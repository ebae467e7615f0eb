"""Per-checkpoint result files: fingerprints, atomic writes, and reuse on a re-run.

Each checkpoint's per-sample rows go to ``results/<key>.parquet``, written atomically (temporary file in the
same folder + ``os.replace``) with a fingerprint of the checkpoint file and of the settings in the Parquet
metadata. A re-run reuses a result whose fingerprint still matches, so a crash loses only the checkpoints in
flight.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_write, atomic_write_text
from .discover import CheckpointEntry
from .settings import RESULT_FORMAT, json_normal

__all__ = ["CheckpointResult", "clean_stale_tmp", "file_fingerprint", "load_cached", "read_result",
           "result_path", "write_json", "write_parquet"]

_META_KEY = b"landscape.result"
_SMALL_FILE = 2 * 1024 * 1024  # files up to this size are hashed in full
_MIB = 1024 * 1024


@dataclasses.dataclass
class CheckpointResult:
    """What a worker sends back for one checkpoint.

    Attributes:
        path: the checkpoint (as a string).
        samples: per-sample rows (``landscape.measure`` columns + ``split``), None when it failed. The
            parent adds ``epoch`` (stored or parsed from the name) and ``checkpoint`` when it writes them.
        stored_epoch: the ``epoch`` field stored in the checkpoint (None when absent or failed).
        file: :func:`file_fingerprint` of the file as it was analysed (None when unreadable).
        error: one-line error, None on success.
        seconds: wall time spent on this checkpoint, reading included.
        weights: digest of the loaded weights (matches best-model copies to their epoch), None on failure.
        read_seconds: time spent reading the file (hash + load), on a prefetch thread or not.
        wait_seconds: time the computation waited for the read (0 when prefetching hid it completely).
    """

    path: str
    samples: pd.DataFrame | None
    stored_epoch: int | None
    file: dict[str, Any] | None
    error: str | None
    seconds: float
    weights: str | None = None
    read_seconds: float = 0.0
    wait_seconds: float = 0.0

    @classmethod
    def failure(cls, path: str | os.PathLike, error: str, seconds: float = 0.0) -> CheckpointResult:
        return cls(str(path), None, None, None, error, seconds)


def stat_key(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns), or None when the file cannot be stat-ed: a change means it is being rewritten."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Identify a file's content cheaply: size, mtime and SHA-256.

    Files up to 2 MiB are hashed in full (``hashed="full"``); bigger ones hash their first and last MiB
    (``hashed="ends"``), which together with size and mtime catches rewritten checkpoints.

    Returns:
        ``{"size": int, "mtime_ns": int, "sha256": str, "hashed": "full" | "ends"}``.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= _SMALL_FILE:
            h.update(f.read())
            hashed = "full"
        else:
            h.update(f.read(_MIB))
            f.seek(-_MIB, os.SEEK_END)
            h.update(f.read(_MIB))
            hashed = "ends"
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest(), "hashed": hashed}


def result_path(results_dir: Path, entry: CheckpointEntry) -> Path:
    return results_dir / f"{entry.key}.parquet"


def write_parquet(df: pd.DataFrame, path: Path, metadata: dict[str, Any] | None = None) -> None:
    """Write ``df`` atomically, with ``metadata`` (JSON) in the Parquet schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = df.copy()
    frame.attrs = {}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        meta = dict(table.schema.metadata or {})
        meta[_META_KEY] = json.dumps(json_normal(metadata), sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_json(obj: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(json_normal(obj), indent=2, sort_keys=False) + "\n")


def read_result(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read one ``results/<key>.parquet`` file: (per-sample rows, its metadata with the fingerprint)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    return table.to_pandas(), meta


def read_result_meta(path: Path) -> dict[str, Any] | None:
    """The metadata of a result file, or None when it is unreadable or not one of ours."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[_META_KEY])
    except (OSError, ValueError, KeyError, TypeError):  # unreadable or foreign file: recomputed
        return None


def clean_stale_tmp(*dirs: Path) -> list[Path]:
    """Remove temporary files a killed run left behind (``.name.*.tmp``)."""
    removed = []
    for d in dirs:
        if d.is_dir():
            for tmp in d.glob(".*.tmp"):
                try:
                    tmp.unlink()
                    removed.append(tmp)
                except OSError:
                    pass
    return removed


def load_cached(path: Path, entry: CheckpointEntry, settings_fp: dict) -> dict[str, Any] | None:
    """The stored outcome for ``entry`` if its result file matches the checkpoint and the settings, else None.

    Returns:
        ``{"samples", "stored_epoch", "error": None, "weights"}`` or None (then it is recomputed).
    """
    if not path.exists():
        return None
    meta = read_result_meta(path)
    if not meta or meta.get("format") != RESULT_FORMAT or meta.get("settings") != settings_fp:
        return None
    try:
        current = file_fingerprint(entry.path)
    except OSError:
        return None
    if meta.get("file") != current:
        return None
    try:
        samples, _ = read_result(path)
    except (OSError, ValueError):  # damaged result file (pyarrow errors are ValueErrors): recompute
        return None
    return {"samples": samples, "stored_epoch": meta.get("stored_epoch"), "error": None,
            "weights": meta.get("weights")}


def result_metadata(result: CheckpointResult, entry: CheckpointEntry, settings_fp: dict) -> dict[str, Any]:
    """What a result file's metadata records: fingerprints, stored epoch, weights digest, timings."""
    return {"format": RESULT_FORMAT, "settings": settings_fp, "file": result.file,
            "stored_epoch": result.stored_epoch, "checkpoint": str(entry.path), "weights": result.weights,
            "seconds": round(result.seconds, 3), "read_seconds": round(result.read_seconds, 3),
            "wait_seconds": round(result.wait_seconds, 3)}
