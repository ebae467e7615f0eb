"""Images decoded batch by batch: peak memory follows the batch, not the dataset.

``batches`` decodes a dataset (say a :func:`~landscape.datasets.subsets.select` subset) through a
``DataLoader`` (worker processes for datasets that decode files, none for arrays already in memory);
``materialize`` stacks a small subset into tensors.
"""
from __future__ import annotations

import multiprocessing
import os
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from ._base import DataError, LabelledDataset, Subset

__all__ = ["batches", "decodes", "default_workers", "materialize", "nbytes"]


def decodes(ds: LabelledDataset) -> bool:
    """True when items are decoded from files (worth worker processes)."""
    inner = ds.dataset if isinstance(ds, Subset) else ds
    return bool(getattr(inner, "decodes", False))


def default_workers(ds: LabelledDataset) -> int:
    """Worker processes for ``batches``: 0 for arrays in memory, else up to 4 (one core left to the model)."""
    if not decodes(ds) or multiprocessing.current_process().daemon:  # a pool worker may not have children
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def nbytes(ds: LabelledDataset) -> int:
    """Bytes of ``ds`` decoded as float32."""
    c, h, w = ds.info.input_shape
    return len(ds) * c * h * w * 4


def batches(ds: LabelledDataset, batch_size: int, *, workers: int | None = None) -> Iterator[tuple[torch.Tensor,
                                                                                                    torch.Tensor]]:
    """``(x (B, C, H, W) float32, y (B,) int64)`` batches of ``ds`` in order, decoded as they are needed.

    Args:
        ds: the dataset (a ``select`` subset, say).
        batch_size: samples per batch (the last may be smaller).
        workers: DataLoader worker processes; default :func:`default_workers`.
    """
    workers = default_workers(ds) if workers is None else workers
    # a generator of its own: a DataLoader draws its workers' base seed from it, never from the caller's RNG
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, generator=torch.Generator(),
                        persistent_workers=False, prefetch_factor=2 if workers else None)
    try:
        for x, y in loader:
            yield x, y.to(torch.int64)
    except DataError as exc:
        error = _from_worker(exc)
        if error is exc:
            raise
        # torch's re-raise leaves a reference cycle through this traceback that keeps the loader's iterator, and
        # so its worker processes, alive until a garbage collection, which then waits for them (seconds):
        # dropping the traceback frees the iterator now and shuts the workers down at once
        exc.__traceback__ = None
        raise error from None


def _from_worker(exc: DataError) -> DataError:
    """The one-line error a worker process raised: the DataLoader re-raises it in this process with a message
    of "Caught DataError in DataLoader worker process k." followed by the worker's whole traceback."""
    text = str(exc)
    if not text.startswith("Caught "):
        return exc
    kind = type(exc)
    prefix = f"{kind.__module__}.{kind.__qualname__}: "  # the traceback's last line: "module.Class: message"
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return kind(lines[-1][len(prefix):]) if lines else exc


def materialize(ds: LabelledDataset, *, batch_size: int = 256, workers: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """All of ``ds`` as ``(x (N, C, H, W) float32, y (N,) int64)`` tensors (for subsets that fit in memory)."""
    if len(ds) == 0:
        raise DataError(f"{ds.source}: no samples")
    xs, ys = [], []
    for x, y in batches(ds, batch_size, workers=workers):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)
