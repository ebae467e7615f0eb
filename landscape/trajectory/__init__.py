"""Analyse every checkpoint of a training run: resumable, parallel, failures recorded.

``analyse_trajectory(checkpoint_dir, "mlp", out_dir="runs/x")`` finds the checkpoints, reads each one's
epoch, measures the input loss landscape at each (``landscape.measure`` on the train and test subsets) and
writes one result file per checkpoint, then the trajectory table (one row per epoch and split), all
per-sample rows, the settings and the robust-overfitting diagnosis into ``out_dir``.

Modules, in the order data flows:

* :mod:`.discover` -- finding checkpoints, epochs from names, optimizer states and best-model copies;
* :mod:`.settings` -- :class:`TrajectorySettings` (validated; its fingerprint decides reuse);
* :mod:`.store` -- fingerprints and atomic per-checkpoint result files;
* :mod:`.worker` -- measuring one checkpoint (prefetched reads, data kept on the device);
* :mod:`.executors` -- serial, local process pool (one worker per GPU), Ray;
* :mod:`.assemble` -- epochs, summaries and markers into the run's tables;
* :mod:`.histories` -- the per-sample, per-epoch history table (stable sample ids), streamed to disk;
* :mod:`.analyse` -- :func:`analyse_trajectory`, the orchestration.

Reliability rules:

* the parent process writes each per-checkpoint result atomically (temporary file in the same folder +
  ``os.replace``) together with a fingerprint of the checkpoint file and of the settings; a re-run reuses
  the results whose fingerprint still matches, so a crash or Ctrl-C loses at most the checkpoints in flight;
* a failing checkpoint (corrupt, wrong architecture, still being written) is recorded with its one-line
  error in the ``error`` column and the run goes on; a file whose size or mtime changed while it was
  being read is retried once after ``retry_delay`` seconds;
* executors ``serial``, ``process`` and ``ray`` give identical tables.
"""
from __future__ import annotations

from .analyse import analyse_trajectory
from .assemble import summarise_samples
from .discover import (
    CHECKPOINT_SUFFIXES,
    CheckpointEntry,
    Discovery,
    checkpoint_stem,
    discover_checkpoints,
    is_optimizer_state,
    marker_kind,
    parse_epoch,
)
from .executors import EXECUTORS, worker_devices
from .histories import HISTORIES_FILE, read_histories, write_histories
from .settings import TrajectorySettings, TrajectoryWarning
from .store import CheckpointResult, file_fingerprint, read_result
from .worker import analyse_checkpoint

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "EXECUTORS",
    "HISTORIES_FILE",
    "CheckpointEntry",
    "CheckpointResult",
    "Discovery",
    "TrajectorySettings",
    "TrajectoryWarning",
    "analyse_checkpoint",
    "analyse_trajectory",
    "checkpoint_stem",
    "discover_checkpoints",
    "file_fingerprint",
    "is_optimizer_state",
    "marker_kind",
    "parse_epoch",
    "read_histories",
    "read_result",
    "summarise_samples",
    "worker_devices",
    "write_histories",
]
