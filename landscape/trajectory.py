"""Analyse every checkpoint of a training run: resumable, parallel, failures recorded.

``analyse_trajectory(checkpoint_dir, "mlp", out_dir="runs/x")`` finds the checkpoints, reads each one's
epoch, measures the input loss landscape at each (``landscape.measure`` on the train and test subsets) and
writes one result file per checkpoint, then the trajectory table (one row per epoch and split), all
per-sample rows, the settings and the robust-overfitting diagnosis into ``out_dir``.

Reliability rules:

* the parent process writes each per-checkpoint result atomically (temporary file in the same folder +
  ``os.replace``) together with a fingerprint of the checkpoint file (size, mtime, SHA-256 of the whole
  file, or of its first and last MiB for big files) and of the settings; a re-run reuses the results whose
  fingerprint still matches and recomputes the others, so a crash or Ctrl-C loses at most the checkpoints
  in flight;
* a failing checkpoint (corrupt, wrong architecture, still being written) is recorded with its one-line
  error in the ``error`` column and the run goes on; a file whose size or mtime changed while it was
  being read is retried once after ``retry_delay`` seconds;
* executors ``serial``, ``process`` (a spawn-context process pool) and ``ray`` give identical tables.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import glob as globmod
import hashlib
import json
import math
import multiprocessing
import os
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._base import LandscapeError, resolve_device
from .runs import run_file
from ._io import atomic_write, atomic_write_text

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "EXECUTORS",
    "CheckpointEntry",
    "CheckpointResult",
    "Discovery",
    "TrajectorySettings",
    "TrajectoryWarning",
    "analyse_checkpoint",
    "analyse_trajectory",
    "discover_checkpoints",
    "file_fingerprint",
    "parse_epoch",
    "read_result",
    "summarise_samples",
]

CHECKPOINT_SUFFIXES = (".pth.tar", ".pt", ".pth", ".tar", ".ckpt", ".safetensors", ".bin")
EXECUTORS = ("serial", "process", "ray")
SPLITS = ("train", "test")
RESULT_FORMAT = 1
_META_KEY = b"landscape.result"
_SMALL_FILE = 2 * 1024 * 1024  # files up to this size are hashed in full
_MIB = 1024 * 1024
# per-sample columns that are not measures
_ID_COLUMNS = ("sample", "label", "epoch", "split", "checkpoint")
_BASE_COLUMNS = ("loss_clean", "loss_adv", "correct_clean", "correct_adv")


class TrajectoryWarning(UserWarning):
    """Something about the checkpoints that the user should know (duplicated or unknown epochs)."""


# ----------------------------------------------------------------------------------------------------------
# discovery and epoch parsing

# an epoch token: "epoch12", "epoch_12", "epoch=12", "ep-3", "e12", "model_e001"; the word must not be glued
# to a preceding letter (so "resnet18" and "wide12" are not epochs).
_EPOCH_TOKEN = re.compile(r"(?:^|[^a-z])(?:epoch|ep|e)[_\-=]?(\d+)(?![0-9])", re.IGNORECASE)
# a trailing number: "model_12", "run-7", or a name that is only a number: "12"
_TRAILING = re.compile(r"(?:^|[_\-.])(\d+)$")


def checkpoint_stem(name: str) -> str:
    """File name without its checkpoint suffix: ``"a_end.pth.tar" -> "a_end"``, ``"e3.pt" -> "e3"``."""
    lower = name.lower()
    for suffix in CHECKPOINT_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def parse_epoch(name: str | os.PathLike) -> int | None:
    """Epoch number written in a checkpoint's file name, or None.

    Recognised: ``e12``, ``epoch12``, ``epoch_12``, ``epoch=12``, ``ep-3``, ``model_e001`` (an epoch word,
    optional ``_``/``-``/``=``, digits; the last such token wins), else a trailing number after ``_``, ``-``
    or ``.`` (``model_12.pt``) or a name that is only digits (``12.pt``). Official AdvLC names
    (``{id}_end.pth.tar``, ``_acc``, ``_pgd``) carry no epoch in the name: their stored ``epoch`` is used.

    Args:
        name: a file name or path (only the final component is read).

    Returns:
        The epoch as an int, or None when the name holds none.
    """
    stem = checkpoint_stem(Path(name).name)
    tokens = _EPOCH_TOKEN.findall(stem)
    if tokens:
        return int(tokens[-1])
    match = _TRAILING.search(stem)
    return int(match.group(1)) if match else None


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _is_checkpoint_name(name: str) -> bool:
    return name.lower().endswith(CHECKPOINT_SUFFIXES) and not name.startswith(".")


@dataclasses.dataclass(frozen=True)
class CheckpointEntry:
    """One discovered checkpoint.

    Attributes:
        path: the file.
        key: unique name of its result file (``results/<key>.parquet``): the stem, made unique when two
            checkpoints share one.
        name_epoch: epoch parsed from the file name (None when the name holds none).
        position: 1-based position in natural name order (used as the epoch when no checkpoint has one).
    """

    path: Path
    key: str
    name_epoch: int | None
    position: int


@dataclasses.dataclass
class Discovery:
    """Result of :func:`discover_checkpoints`: the checkpoints in natural name order, plus what was left out."""

    entries: list[CheckpointEntry]
    skipped: list[str]  # files that are not checkpoints (.json, .csv, .png, ...)
    unparsed: list[str]  # checkpoints whose name holds no epoch

    @property
    def paths(self) -> list[Path]:
        return [e.path for e in self.entries]


def discover_checkpoints(source: str | os.PathLike | Sequence[str | os.PathLike]) -> Discovery:
    """Find checkpoints in a directory, a glob pattern or a list of paths, in natural name order.

    A directory (not recursive) and a glob keep only files ending in one of :data:`CHECKPOINT_SUFFIXES`
    and list the others in ``skipped``; an explicit list keeps every file it names except files with a
    known non-checkpoint suffix (``.json``, ``.csv``, ``.parquet``, ``.png``, ...).

    Args:
        source: directory, glob pattern (``"runs/a/*.pt"``) or a sequence of file paths.

    Returns:
        :class:`Discovery` with one :class:`CheckpointEntry` per checkpoint.

    Raises:
        TypeError: ``source`` is not a path, string or sequence of them.
        FileNotFoundError: a directory or listed file that does not exist.
        LandscapeError: no checkpoints found.
    """
    skipped: list[str] = []
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if os.path.isdir(text):
            names = sorted(os.listdir(text))
            files = [Path(text) / n for n in names if (Path(text) / n).is_file()]
            where = text
        elif any(ch in text for ch in "*?["):
            files = [Path(p) for p in globmod.glob(text) if os.path.isfile(p)]
            where = text
        elif os.path.isfile(text):
            files, where = [Path(text)], text
            if not _is_checkpoint_name(Path(text).name) and Path(text).suffix.lower() in _NOT_CHECKPOINTS:
                raise LandscapeError(f"{text} is not a checkpoint (looked for {', '.join(CHECKPOINT_SUFFIXES)})")
        else:
            raise FileNotFoundError(f"no such checkpoint directory or file: {text}")
        if not (os.path.isfile(text)):
            keep = [f for f in files if _is_checkpoint_name(f.name)]
            skipped = sorted(str(f) for f in files if f not in keep)
            files = keep
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        files = []
        for item in source:
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(f"checkpoint paths must be str or os.PathLike, got {type(item).__name__}")
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint not found: {path}")
            if path.suffix.lower() in _NOT_CHECKPOINTS and not _is_checkpoint_name(path.name):
                skipped.append(str(path))
            else:
                files.append(path)
        where = "the given paths"
    else:
        raise TypeError(f"checkpoints must be a directory, a glob or a list of paths, got {type(source).__name__}")
    files = sorted(dict.fromkeys(files), key=lambda p: (_natural_key(p.name), str(p)))
    if not files:
        raise LandscapeError(f"no checkpoints found in {where} (looked for {', '.join('*' + s for s in CHECKPOINT_SUFFIXES)})")
    stems = [checkpoint_stem(p.name) for p in files]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    entries = []
    for i, (path, stem) in enumerate(zip(files, stems)):
        key = stem if counts[stem] == 1 else f"{stem}-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
        entries.append(CheckpointEntry(path=path, key=key, name_epoch=parse_epoch(path.name), position=i + 1))
    unparsed = [str(e.path) for e in entries if e.name_epoch is None]
    return Discovery(entries=entries, skipped=skipped, unparsed=unparsed)


_NOT_CHECKPOINTS = {".json", ".csv", ".parquet", ".png", ".pdf", ".svg", ".jpg", ".txt", ".log", ".md", ".yaml",
                    ".yml", ".html", ".tmp", ".npz", ".npy", ".py", ".sh", ".toml", ".ini", ".out", ".err"}


# ----------------------------------------------------------------------------------------------------------
# fingerprints and atomic result files

def _stat(path: Path) -> tuple[int, int] | None:
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


def _json_normal(obj: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, so two equal settings compare equal after a JSON round trip."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in settings")


def _write_parquet(df: pd.DataFrame, path: Path, metadata: dict[str, Any] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = df.copy()
    frame.attrs = {}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        meta = dict(table.schema.metadata or {})
        meta[_META_KEY] = json.dumps(_json_normal(metadata), sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _write_json(obj: Any, path: Path) -> None:
    text = json.dumps(_json_normal(obj), indent=2, sort_keys=False)
    atomic_write_text(path, text + "\n")


def read_result(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read one ``results/<key>.parquet`` file: (per-sample rows, its metadata with the fingerprint)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    return table.to_pandas(), meta


def _read_result_meta(path: Path) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[_META_KEY])
    except (OSError, ValueError, KeyError, TypeError):  # unreadable or foreign file: recomputed
        return None


def _clean_stale_tmp(*dirs: Path) -> list[Path]:
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


# ----------------------------------------------------------------------------------------------------------
# one checkpoint

@dataclasses.dataclass(frozen=True)
class TrajectorySettings:
    """Everything that decides a checkpoint's numbers (stored in the fingerprint; a change recomputes)."""

    arch: str
    data: str = "digits"
    arch_kwargs: tuple[tuple[str, Any], ...] = ()
    measures: tuple[str, ...] | None = None
    n: int | None = 500
    splits: tuple[str, ...] = SPLITS
    attack: str = "pgd"
    eps: float = 0.1
    steps: int = 10
    step_size: float | None = None
    norm: str = "linf"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    seed: int = 0
    batch_size: int = 128
    data_root: str | None = None
    device: str = "cpu"
    trusted: bool = False  # how to unpickle, not what is computed: left out of the fingerprint

    def fingerprint(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("trusted")
        d["arch_kwargs"] = dict(self.arch_kwargs)
        d["format"] = RESULT_FORMAT
        return _json_normal(d)


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
        seconds: wall time spent.
    """

    path: str
    samples: pd.DataFrame | None
    stored_epoch: int | None
    file: dict[str, Any] | None
    error: str | None
    seconds: float


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, LandscapeError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@functools.lru_cache(maxsize=4)
def _dataset(data: str, split: str, root: str | None, n: int | None, seed: int):
    from .data import load_dataset

    return load_dataset(data, split, root=root, n=n, seed=seed)


def _measure_checkpoint(path: Path, s: TrajectorySettings) -> tuple[pd.DataFrame, int | None]:
    """Load one checkpoint and measure it on each split: (per-sample rows with ``split``, stored epoch)."""
    from . import measure
    from .checkpoints import load_checkpoint, load_model

    ckpt = load_checkpoint(path, trusted=s.trusted)  # read once: its epoch and its weights
    stored = ckpt.epoch
    model = load_model(ckpt, s.arch, mean=s.mean, std=s.std, device=s.device, **dict(s.arch_kwargs))
    frames = []
    for split in s.splits:
        x, y = _dataset(s.data, split, s.data_root, s.n, s.seed)
        df = measure(model, x.to(s.device), y.to(s.device), eps=s.eps, attack=s.attack, steps=s.steps,
                     step_size=s.step_size, norm=s.norm, measures=list(s.measures) if s.measures else None,
                     batch_size=s.batch_size, seed=s.seed)
        df.insert(0, "split", split)
        frames.append(df)
    return pd.concat(frames, ignore_index=True), (int(stored) if stored is not None else None)


def analyse_checkpoint(path: str | os.PathLike, settings: TrajectorySettings, *,
                       retry_delay: float = 1.0) -> CheckpointResult:
    """Measure one checkpoint; never raises for a bad checkpoint (the error is returned instead).

    A file whose size or mtime changed while it was read (still being written) is retried once after
    ``retry_delay`` seconds.

    Args:
        path: checkpoint file.
        settings: what to compute.
        retry_delay: seconds to wait before deciding whether the file is still changing.

    Returns:
        :class:`CheckpointResult` with per-sample rows or a one-line ``error``.
    """
    path = Path(path)
    start = time.perf_counter()
    for attempt in (0, 1):
        before = _stat(path)
        try:
            fp = file_fingerprint(path)
            samples, stored = _measure_checkpoint(path, settings)
            if _stat(path) != before:
                raise LandscapeError(f"{path} changed while it was being read (still being written?)")
            return CheckpointResult(str(path), samples, stored, fp, None, time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 -- a bad checkpoint is a result, not a crash
            error = _one_line(exc)
            if attempt == 0:
                time.sleep(retry_delay)
                if _stat(path) != before:
                    continue
            return CheckpointResult(str(path), None, None, None, error, time.perf_counter() - start)
    raise AssertionError("unreachable")


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _worker_task(path: str, settings: TrajectorySettings, retry_delay: float, threads: int) -> CheckpointResult:
    """Entry point of process and Ray workers."""
    _init_worker(threads)
    return analyse_checkpoint(path, settings, retry_delay=retry_delay)


# ----------------------------------------------------------------------------------------------------------
# summaries

def _measure_columns(samples: pd.DataFrame) -> list[str]:
    return [c for c in samples.columns if c not in _ID_COLUMNS and c not in _BASE_COLUMNS
            and pd.api.types.is_numeric_dtype(samples[c]) and not pd.api.types.is_bool_dtype(samples[c])]


def _finite_stat(values: np.ndarray, fn) -> float:
    v = values[np.isfinite(values)]
    return float(fn(v)) if v.size else float("nan")


def summarise_samples(samples: pd.DataFrame, measure_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-split summary of one checkpoint's per-sample rows.

    Args:
        samples: per-sample rows with ``split``, ``loss_clean``, ``loss_adv``, ``correct_clean``,
            ``correct_adv`` and measure columns.
        measure_columns: measure columns to summarise (default: every other numeric column).

    Returns:
        One row per split: ``split, n, acc_clean, acc_adv, loss_clean, loss_adv`` (accuracies as fractions
        in [0, 1], means over finite values), ``m_mean, m_median, m_q10, m_q90`` per measure ``m`` (over
        finite values), and ``nonfinite`` (NaN/Inf count over the loss and measure columns).
    """
    cols = list(measure_columns) if measure_columns is not None else _measure_columns(samples)
    rows = []
    for split in [s for s in SPLITS if s in set(samples["split"])] + sorted(set(samples["split"]) - set(SPLITS)):
        part = samples[samples["split"] == split]
        row: dict[str, Any] = {"split": split, "n": len(part)}
        row["acc_clean"] = float(part["correct_clean"].astype(float).mean())
        row["acc_adv"] = float(part["correct_adv"].astype(float).mean())
        nonfinite = 0
        for c in ("loss_clean", "loss_adv"):
            v = part[c].to_numpy(dtype=float)
            row[c] = _finite_stat(v, np.mean)
            nonfinite += int((~np.isfinite(v)).sum())
        for m in cols:
            v = part[m].to_numpy(dtype=float) if m in part else np.full(len(part), np.nan)
            nonfinite += int((~np.isfinite(v)).sum())
            row[f"{m}_mean"] = _finite_stat(v, np.mean)
            row[f"{m}_median"] = _finite_stat(v, np.median)
            row[f"{m}_q10"] = _finite_stat(v, lambda a: np.quantile(a, 0.1))
            row[f"{m}_q90"] = _finite_stat(v, lambda a: np.quantile(a, 0.9))
        row["nonfinite"] = nonfinite
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------
# executors

def _run_serial(tasks, settings, retry_delay, threads, on_result) -> None:
    for entry in tasks:
        on_result(entry, analyse_checkpoint(entry.path, settings, retry_delay=retry_delay))


def _run_process(tasks, settings, retry_delay, threads, on_result, workers: int) -> None:
    pending = list(tasks)
    for attempt in (1, 2):
        if not pending:
            return
        pool = cf.ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=_mp_context(),
                                      initializer=_init_worker, initargs=(threads,))
        futures = {pool.submit(_worker_task, str(e.path), settings, retry_delay, threads): e for e in pending}
        done_keys: set[str] = set()
        broken = False
        try:
            for fut in cf.as_completed(futures):
                entry = futures[fut]
                try:
                    result = fut.result()
                except cf.process.BrokenProcessPool:
                    broken = True
                    break
                done_keys.add(entry.key)
                on_result(entry, result)
        except BaseException:
            _kill_pool(pool)
            raise
        if broken:
            _kill_pool(pool)
        else:
            pool.shutdown(wait=True)
        pending = [e for e in pending if e.key not in done_keys]
        if broken and attempt == 1 and pending:
            warnings.warn(f"a worker process died; restarting the pool for the {len(pending)} remaining "
                          "checkpoint(s)", TrajectoryWarning, stacklevel=4)
        if broken and attempt == 2:
            for e in pending:
                on_result(e, CheckpointResult(
                    str(e.path), None, None, None,
                    "worker process died twice (out of memory? a script using executor='process' needs an "
                    "`if __name__ == '__main__':` guard); re-run to retry", 0.0))
            return


def _mp_context() -> multiprocessing.context.BaseContext:
    """'forkserver' where available (workers fork from a clean server that imported torch once), else 'spawn'.

    Both start workers from a fresh interpreter, never by forking this (possibly multi-threaded) process.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["landscape.trajectory", "landscape.checkpoints", "landscape.data",
                                    "landscape.measures"])
        return ctx
    return multiprocessing.get_context("spawn")


def _kill_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Stop now: cancel queued work and terminate the workers (shutdown alone lets queued calls run)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=5)


def _run_ray(tasks, settings, retry_delay, threads, on_result, workers: int, address: str | None) -> None:
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        import logging

        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                                  "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_worker_task)
        refs = {remote.remote(str(e.path), settings, retry_delay, threads): e for e in tasks}
        waiting = list(refs)
        try:
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                for ref in ready:
                    entry = refs[ref]
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 -- a lost Ray task is recorded, the run goes on
                        result = CheckpointResult(str(entry.path), None, None, None,
                                                  f"ray task failed: {_one_line(exc)}", 0.0)
                    on_result(entry, result)
        except BaseException:
            for ref in waiting:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise LandscapeError("executor='ray' needs Ray: pip install 'landscape[ray]'") from None
    return ray


# ----------------------------------------------------------------------------------------------------------
# the public entry point

def _validate(executor, workers, threads, splits, n, eps, steps, batch_size, norm, attack, measures) -> None:
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r} (allowed: {', '.join(EXECUTORS)})")
    for name, value in (("workers", workers), ("threads", threads)):
        if name == "threads" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(splits, str) or not splits:
        raise ValueError(f"splits must be a non-empty sequence of 'train'/'test', got {splits!r}")
    bad = [s for s in splits if s not in SPLITS]
    if bad or len(set(splits)) != len(splits):
        raise ValueError(f"bad splits {list(splits)!r} (allowed: each of {', '.join(SPLITS)} at most once)")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not (0 <= eps < math.inf):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r} (allowed: linf, l2)")
    if attack not in ("pgd", "fgsm"):
        raise ValueError(f"unknown attack {attack!r} (allowed: pgd, fgsm)")
    if measures is not None:
        if isinstance(measures, str):
            raise TypeError(f"measures must be a list of names, got the string {measures!r}")
        try:
            from .measures import MEASURES
        except ImportError:
            return
        unknown = [m for m in measures if m not in MEASURES]
        if unknown:
            raise ValueError(f"unknown measures {unknown} (allowed: {', '.join(MEASURES)})")


def _default_run_name(discovery: Discovery) -> str:
    parents = {e.path.resolve().parent for e in discovery.entries}
    if len(parents) == 1:
        return parents.pop().name
    return os.path.commonpath([str(p) for p in parents]).rstrip(os.sep).split(os.sep)[-1] or "run"


def analyse_trajectory(paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike], arch: str,
                       data: str = "digits", *, out_dir: str | os.PathLike,
                       measures: Sequence[str] | None = None, n: int | None = 500, eps: float = 0.1,
                       steps: int = 10, step_size: float | None = None, norm: str = "linf",
                       attack: str = "pgd", splits: Sequence[str] = SPLITS, executor: str = "serial",
                       workers: int = 1, ray_address: str | None = None, arch_kwargs: dict | None = None,
                       mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                       trusted: bool = False, seed: int = 0, batch_size: int = 128,
                       data_root: str | os.PathLike | None = None, device: str = "cpu", run: str | None = None,
                       threads: int | None = None, retry_delay: float = 1.0,
                       progress: bool = True) -> pd.DataFrame:
    """Measure every checkpoint of a run and write a resumable run directory.

    Args:
        paths_or_dir: checkpoint directory, glob pattern or list of checkpoint files.
        arch: registered architecture (``landscape.list_models()``); ``arch_kwargs`` go to its constructor.
        data: dataset name (``digits``, ``cifar10``, ``cifar100``); ``data_root`` for the local CIFAR files.
        out_dir: run directory to write (created); results already there with a matching fingerprint are
            reused.
        measures: measure names (``landscape.measures.MEASURES``); None = ``measure``'s default.
        n: samples per split (deterministic stratified subset; None = all).
        eps, steps, step_size, norm, attack: the attack used by the measures (eps in [0, 1] pixel units;
            the default 0.1 suits digits, use 8/255 for CIFAR).
        splits: which of ``("train", "test")`` to measure.
        executor: ``"serial"``, ``"process"`` (spawn-context process pool) or ``"ray"``.
        workers: parallel workers (process and ray executors).
        threads: torch threads per process/ray worker; default ``max(1, cores // workers)``. On a
            machine busy with other work, 1 thread per worker is often faster and steadier.
        ray_address: join this Ray cluster instead of starting a local one with ``num_cpus=workers``.
        mean, std: wrap the model in ``Normalized`` (inputs stay in [0, 1]).
        trusted: allow full unpickling of checkpoints (runs code stored in them: only for your own files).
        seed: seeds the data subset and the attack's random start.
        batch_size: samples per forward/backward pass.
        device: torch device for the measures.
        run: value of the ``run`` column (default: the checkpoint directory's name).
        retry_delay: seconds before re-checking a checkpoint that failed to load (still being written?).
        progress: show a progress bar over checkpoints.

    Returns:
        The trajectory table, one row per (epoch, split), columns ``run, epoch, checkpoint, split, n,
        acc_clean, acc_adv, loss_clean, loss_adv, <m>_mean, <m>_median, <m>_q10, <m>_q90, nonfinite, error``
        (accuracies as fractions; ``epoch`` int64, nullable Int64 when some epoch is unknown). ``attrs``
        holds ``failed`` (number of failed checkpoints), ``failed_checkpoints``, ``computed``, ``reused``,
        ``duplicates`` (``{epoch: [checkpoints]}``), ``unparsed`` (names holding no epoch), ``no_epoch``
        (checkpoints whose epoch stayed unknown), ``skipped`` (non-checkpoint files) and ``out_dir``.

    Raises:
        LandscapeError: no checkpoints found; Ray requested but not installed.
        ValueError, TypeError: bad settings (named with the allowed values).
    """
    from tqdm.auto import tqdm

    from .models import create_model

    splits = tuple(splits) if not isinstance(splits, str) else splits
    _validate(executor, workers, threads, splits, n, eps, steps, batch_size, norm, attack, measures)
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a registered architecture name, got {type(arch).__name__}")
    arch_kwargs = dict(arch_kwargs or {})
    create_model(arch, **arch_kwargs)  # unknown name or bad arguments: fail before the run starts
    discovery = discover_checkpoints(paths_or_dir)
    if executor == "ray":
        _import_ray()
    else:  # a Ray driver may lack the workers' GPUs, so only local runs check the device up front
        resolve_device(device)
    settings = TrajectorySettings(
        arch=arch, data=data, arch_kwargs=tuple(sorted(arch_kwargs.items())),
        measures=tuple(measures) if measures is not None else None, n=n, splits=splits, attack=attack,
        eps=float(eps), steps=steps, step_size=None if step_size is None else float(step_size), norm=norm,
        mean=None if mean is None else tuple(float(v) for v in mean),
        std=None if std is None else tuple(float(v) for v in std), seed=int(seed), batch_size=batch_size,
        data_root=None if data_root is None else os.fspath(data_root), device=str(device), trusted=trusted)
    for split in splits:  # unknown dataset or missing files: a user error before the run starts
        _dataset(settings.data, split, settings.data_root, settings.n, settings.seed)

    out = Path(out_dir)
    results_dir = out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(out, results_dir)
    settings_fp = settings.fingerprint()

    outcomes: dict[str, dict[str, Any]] = {}  # key -> {"samples", "stored_epoch", "error"}
    todo: list[CheckpointEntry] = []
    for entry in discovery.entries:
        cached = _load_cached(results_dir / f"{entry.key}.parquet", entry, settings_fp)
        if cached is not None:
            outcomes[entry.key] = cached
        else:
            todo.append(entry)
    reused = len(outcomes)

    bar = tqdm(total=len(discovery.entries), initial=reused, desc="trajectory", unit="ckpt",
               disable=not progress, leave=False)

    def on_result(entry: CheckpointEntry, result: CheckpointResult) -> None:
        target = results_dir / f"{entry.key}.parquet"
        if result.error is None:
            meta = {"format": RESULT_FORMAT, "settings": settings_fp, "file": result.file,
                    "stored_epoch": result.stored_epoch, "checkpoint": str(entry.path),
                    "seconds": round(result.seconds, 3)}
            epoch = result.stored_epoch if result.stored_epoch is not None else entry.name_epoch
            rows = result.samples.copy()
            rows.insert(0, "checkpoint", str(entry.path))
            rows.insert(0, "epoch", pd.array([epoch] * len(rows), dtype="Int64"))
            try:
                _write_parquet(rows, target, meta)
            except OSError as exc:  # e.g. disk full: this checkpoint fails, the run goes on
                result = dataclasses.replace(result, samples=None, stored_epoch=None,
                                             error=f"cannot write {target.name}: {_one_line(exc)}")
        if result.error is not None and target.exists():
            target.unlink()  # an old result for a file that now fails is stale
        outcomes[entry.key] = {"samples": result.samples, "stored_epoch": result.stored_epoch,
                               "error": result.error}
        bar.update(1)
        if result.error is not None:
            where = "" if str(entry.path) in result.error else f"{entry.path}: "
            bar.write(f"landscape: {where}{result.error}")

    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    try:
        if not todo:
            pass
        elif executor == "serial":
            _run_serial(todo, settings, retry_delay, threads, on_result)
        elif executor == "process":
            _run_process(todo, settings, retry_delay, threads, on_result, workers)
        else:
            _run_ray(todo, settings, retry_delay, threads, on_result, workers, ray_address)
    finally:
        bar.close()

    table, samples, report = _assemble(discovery, outcomes, settings, run or _default_run_name(discovery))
    _write_parquet(table, out / run_file("trajectory"))
    _write_parquet(samples, out / run_file("samples"))
    _write_json({"settings": settings_fp, "run": table["run"].iloc[0] if len(table) else run,
                 "checkpoints": [str(e.path) for e in discovery.entries], **report,
                 "computed": len(todo), "reused": reused}, out / run_file("settings"))
    _write_json(_diagnosis_json(table), out / run_file("diagnosis"))
    table.attrs.update(report)
    table.attrs.update({"computed": len(todo), "reused": reused, "out_dir": str(out)})
    return table


def _load_cached(path: Path, entry: CheckpointEntry, settings_fp: dict) -> dict[str, Any] | None:
    if not path.exists():
        return None
    meta = _read_result_meta(path)
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
    return {"samples": samples, "stored_epoch": meta.get("stored_epoch"), "error": None}


def _resolve_epochs(discovery: Discovery, outcomes: dict[str, dict[str, Any]]) -> tuple[dict[str, int | None], list[str]]:
    """Epoch per checkpoint key: the stored epoch, else the name's, else (when no checkpoint has one) the position."""
    epochs: dict[str, int | None] = {}
    for e in discovery.entries:
        stored = outcomes[e.key]["stored_epoch"]
        if stored is not None and e.name_epoch is not None and stored != e.name_epoch:
            warnings.warn(f"{e.path}: name says epoch {e.name_epoch} but the file stores epoch {stored}; "
                          f"using {stored}", TrajectoryWarning, stacklevel=3)
        epochs[e.key] = stored if stored is not None else e.name_epoch
    if all(v is None for v in epochs.values()):
        if len(epochs) > 1:
            warnings.warn("no checkpoint has an epoch in its name or contents; numbering them by name order "
                          "(1, 2, ...)", TrajectoryWarning, stacklevel=3)
        epochs = {e.key: e.position for e in discovery.entries}
        unknown: list[str] = []
    else:
        unknown = [str(e.path) for e in discovery.entries if epochs[e.key] is None]
        if unknown:
            warnings.warn(f"{len(unknown)} checkpoint(s) without a known epoch (epoch left empty): "
                          f"{', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}", TrajectoryWarning,
                          stacklevel=3)
    return epochs, unknown


def _assemble(discovery: Discovery, outcomes: dict[str, dict[str, Any]], settings: TrajectorySettings,
              run: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    epochs, unknown = _resolve_epochs(discovery, outcomes)
    by_epoch: dict[int, list[str]] = {}
    for e in discovery.entries:
        if epochs[e.key] is not None:
            by_epoch.setdefault(epochs[e.key], []).append(str(e.path))
    duplicates = {ep: paths for ep, paths in sorted(by_epoch.items()) if len(paths) > 1}
    if duplicates:
        text = "; ".join(f"epoch {ep}: {', '.join(Path(p).name for p in ps)}" for ep, ps in duplicates.items())
        warnings.warn(f"duplicated epochs ({text})", TrajectoryWarning, stacklevel=3)

    measure_cols: list[str] = []
    for e in discovery.entries:
        s = outcomes[e.key]["samples"]
        if s is not None:
            for c in _measure_columns(s):
                if c not in measure_cols:
                    measure_cols.append(c)

    rows, sample_frames = [], []
    for e in discovery.entries:
        o = outcomes[e.key]
        head = {"run": run, "epoch": epochs[e.key], "checkpoint": str(e.path)}
        if o["error"] is None:
            summary = summarise_samples(o["samples"], measure_cols)
            for rec in summary.to_dict("records"):
                rows.append({**head, **rec, "error": None})
            s = o["samples"].copy()
            s = s.drop(columns=[c for c in ("epoch", "checkpoint") if c in s.columns])
            s.insert(0, "checkpoint", str(e.path))
            s.insert(0, "epoch", epochs[e.key])
            sample_frames.append(s)
        else:
            for split in settings.splits:
                rows.append({**head, "split": split, "n": 0, "nonfinite": 0, "error": o["error"]})

    stat_cols = ["acc_clean", "acc_adv", "loss_clean", "loss_adv"]
    stat_cols += [f"{m}_{k}" for m in measure_cols for k in ("mean", "median", "q10", "q90")]
    columns = ["run", "epoch", "checkpoint", "split", "n", *stat_cols, "nonfinite", "error"]
    table = pd.DataFrame(rows, columns=columns)
    for c in stat_cols:
        table[c] = table[c].astype(float)
    table["n"] = table["n"].astype("int64")
    table["nonfinite"] = table["nonfinite"].astype("int64")
    table["error"] = table["error"].astype(object).where(table["error"].notna(), None)
    table["epoch"] = table["epoch"].astype("Int64" if table["epoch"].isna().any() else "int64")
    split_rank = {s: i for i, s in enumerate(SPLITS)}
    order = sorted(range(len(table)), key=lambda i: (
        math.inf if pd.isna(table["epoch"].iat[i]) else int(table["epoch"].iat[i]),
        _natural_key(Path(table["checkpoint"].iat[i]).name), split_rank.get(table["split"].iat[i], 99)))
    table = table.iloc[order].reset_index(drop=True)

    if sample_frames:
        samples = pd.concat(sample_frames, ignore_index=True)
        samples["epoch"] = samples["epoch"].astype("Int64" if samples["epoch"].isna().any() else "int64")
    else:
        samples = pd.DataFrame(columns=["epoch", "checkpoint", "split"])
    failed = sorted({str(e.path) for e in discovery.entries if outcomes[e.key]["error"] is not None})
    report = {"failed": len(failed), "failed_checkpoints": failed,
              "duplicates": {int(k): v for k, v in duplicates.items()}, "unparsed": discovery.unparsed,
              "no_epoch": unknown, "skipped": discovery.skipped}
    return table, samples, report


def _diagnosis_json(table: pd.DataFrame) -> dict[str, Any]:
    from .diagnose import diagnose, read_training_log

    try:
        return diagnose(table, log=read_training_log(table=table)).to_dict()
    except (LandscapeError, ValueError) as exc:
        return {"error": _one_line(exc)}
