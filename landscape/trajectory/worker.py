"""Measuring one checkpoint: read it (optionally ahead of time, on a thread), load the model, measure.

Runs in whichever process the executor chose. The evaluation data is kept on the device across
checkpoints (one copy per process and device), and :class:`Prefetcher` reads the next checkpoint file while
the current one is measured, so on a GPU the file reading hides behind the compute.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._base import LandscapeError
from .settings import TrajectorySettings
from .store import CheckpointResult, file_fingerprint, stat_key

__all__ = ["CheckpointRead", "Prefetcher", "analyse_checkpoint", "clear_data_cache", "dataset_indices",
           "evidence_batch", "load_split",
           "one_line", "read_checkpoint", "weights_digest"]


def one_line(exc: BaseException) -> str:
    """The first line of an error, prefixed by its type unless it is a user-facing LandscapeError."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, LandscapeError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: Evaluation data up to this many bytes (float32) is decoded once per process and kept on the device across
#: checkpoints; larger data is streamed batch by batch for every checkpoint (memory follows the batch).
KEEP_BYTES = 1 << 30


def _data_key(s: TrajectorySettings, split: str) -> tuple:
    return (s.data, s.data_args, split, s.data_root, s.n, s.seed, id(s.data_obj) if s.data_obj else None)


_OPENED: dict[tuple, Any] = {}
_ON_DEVICE: dict[tuple, Any] = {}


def open_split(s: TrajectorySettings, split: str):
    """The evaluated samples of one split (a ``LabelledDataset``, nothing decoded), opened once per process."""
    from ..datasets import open_dataset, select

    key = _data_key(s, split)
    if key not in _OPENED:
        if s.data_obj is not None:
            if split not in s.data_obj:
                raise ValueError(f"no {split} data was given (given: {', '.join(s.data_obj)})")
            ds = s.data_obj[split]
        else:
            ds = open_dataset(s.data, split, root=s.data_root, **dict(s.data_args))
        _OPENED[key] = select(ds, s.n, s.seed)
    return _OPENED[key]


def dataset_indices(ds) -> "np.ndarray":
    """(len(ds),) int64: the index of each sample of ``ds`` in the dataset it was drawn from (through any chain of
    ``Subset``s: ``select``'s stratified subset, a user's own subset), so a sample keeps its id whichever
    subset of the split is evaluated; ``arange`` for a whole dataset."""
    from ..datasets import Subset

    if isinstance(ds, Subset):
        return dataset_indices(ds.dataset)[ds.indices]
    return np.arange(len(ds), dtype=np.int64)


def load_split(s: TrajectorySettings, split: str, device: str):
    """``(x, y)`` on ``device`` decoded once per process when the split fits :data:`KEEP_BYTES`, else the
    dataset itself (``measure`` then streams it)."""
    from ..datasets.stream import materialize, nbytes

    key = (*_data_key(s, split), device)
    if key not in _ON_DEVICE:
        ds = open_split(s, split)
        if nbytes(ds) > KEEP_BYTES:
            return ds
        x, y = materialize(ds)
        _ON_DEVICE[key] = (x.to(device), y.to(device))
    return _ON_DEVICE[key]


def evidence_batch(settings: TrajectorySettings, size: int = 128):
    """Up to ``size`` labelled samples of the evaluated data, on CPU: what the wiring decision by evidence
    (clean accuracy of each candidate wiring) is taken on."""
    from ..datasets import Subset
    from ..datasets.stream import materialize

    split = "test" if "test" in settings.splits else settings.splits[0]
    ds = open_split(settings, split)
    return materialize(Subset(ds, range(min(size, len(ds)))), workers=0)


def clear_data_cache() -> None:
    """Drop the cached evaluation data (and its device copies)."""
    _ON_DEVICE.clear()
    _OPENED.clear()


def weights_digest(state_dict: dict[str, Any]) -> str:
    """BLAKE2b of the names, dtypes, shapes and bytes of a state dict's tensors (same weights, same digest)."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(state_dict[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclasses.dataclass
class CheckpointRead:
    """A checkpoint file read from disk: its (size, mtime) before reading, fingerprint, contents (and their
    :func:`weights_digest`) or the error."""

    path: Path
    before: tuple[int, int] | None
    file: dict[str, Any] | None
    checkpoint: Any  # landscape.checkpoints.Checkpoint, None on error
    error: BaseException | None
    seconds: float
    weights: str | None = None


def read_checkpoint(path: str | Path, trusted: bool) -> CheckpointRead:
    """Fingerprint, load and digest one file; never raises for a bad file (the error is kept instead)."""
    from ..checkpoints import load_checkpoint

    path = Path(path)
    start = time.perf_counter()
    before = stat_key(path)
    try:
        fp = file_fingerprint(path)
        ckpt = load_checkpoint(path, trusted=trusted)
        digest = weights_digest(ckpt.state_dict)
    except Exception as exc:  # noqa: BLE001 -- reported when the checkpoint's turn comes
        return CheckpointRead(path, before, None, None, exc, time.perf_counter() - start)
    return CheckpointRead(path, before, fp, ckpt, None, time.perf_counter() - start, digest)


class Prefetcher:
    """Reads checkpoint files on one background thread, ahead of their turn.

    ``start(path)`` begins reading; ``take(path)`` returns ``(CheckpointRead, seconds waited)``, reading
    in the caller's thread when ``path`` was never started. Use as a context manager: leaving it waits for
    a read in flight and drops the unused ones.
    """

    def __init__(self, trusted: bool):
        self._trusted = trusted
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="landscape-prefetch")
        self._pending: dict[str, cf.Future] = {}

    def start(self, path: str | Path) -> None:
        key = str(path)
        if key not in self._pending:
            self._pending[key] = self._pool.submit(read_checkpoint, key, self._trusted)

    def take(self, path: str | Path) -> tuple[CheckpointRead, float]:
        t0 = time.perf_counter()
        future = self._pending.pop(str(path), None)
        read = future.result() if future is not None else read_checkpoint(path, self._trusted)
        return read, time.perf_counter() - t0

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _measure(ckpt, s: TrajectorySettings, device: str) -> pd.DataFrame:
    """Per-sample rows with ``split`` for one loaded checkpoint, on ``device``."""
    from ..checkpoints import load_model
    from ..measures import measure

    model = load_model(ckpt, s.arch, mean=s.mean, std=s.std, device=device, **dict(s.arch_kwargs))
    frames = []
    for split in s.splits:
        data = load_split(s, split, device)
        x, y = data if isinstance(data, tuple) else (data, None)
        df = measure(model, x, y, settings=s.attack, options=s.options)
        df.insert(0, "split", split)
        df.insert(2, "sample_id", dataset_indices(open_split(s, split))[df["sample"].to_numpy()])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def analyse_checkpoint(path: str | Path, settings: TrajectorySettings, *, retry_delay: float = 1.0,
                       read: tuple[CheckpointRead, float] | None = None,
                       device: str | None = None) -> CheckpointResult:
    """Measure one checkpoint; never raises for a bad checkpoint (the error is returned instead).

    A file whose size or mtime changed while it was read (still being written) is retried once after
    ``retry_delay`` seconds.

    Args:
        path: checkpoint file.
        settings: what to compute.
        retry_delay: seconds to wait before deciding whether the file is still changing.
        read: ``(CheckpointRead, seconds waited for it)`` from a :class:`Prefetcher`; default: read now.
        device: run on this device instead of ``settings.device`` (a process worker's own GPU).

    Returns:
        :class:`CheckpointResult` with per-sample rows or a one-line ``error``; ``seconds`` is the time
        this call took (a read that a prefetch finished earlier is not in it).
    """
    path = Path(path)
    device = device or settings.device
    start = time.perf_counter()
    for attempt in (0, 1):
        if attempt == 0 and read is not None:
            r, waited = read
        else:
            r = read_checkpoint(path, settings.trusted)
            waited = r.seconds
        try:
            if r.error is not None:
                raise r.error
            samples = _measure(r.checkpoint, settings, device)
            if stat_key(path) != r.before:
                raise LandscapeError(f"{path} changed while it was being read (still being written?)")
            stored = r.checkpoint.epoch
            return CheckpointResult(str(path), samples, int(stored) if stored is not None else None, r.file,
                                    None, time.perf_counter() - start, weights=r.weights,
                                    read_seconds=r.seconds, wait_seconds=waited)
        except Exception as exc:  # noqa: BLE001 -- a bad checkpoint is a result, not a crash
            error = one_line(exc)
            if attempt == 0:
                time.sleep(retry_delay)
                if stat_key(path) != r.before:
                    continue
            return CheckpointResult.failure(path, error, time.perf_counter() - start)
    raise AssertionError("unreachable")


def init_worker(threads: int) -> None:
    """Per-process setup of a pool or Ray worker."""
    import torch

    torch.set_num_threads(threads)
