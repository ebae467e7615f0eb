"""``analyse_trajectory``: discover, reuse what is done, measure the rest, write the run folder."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._base import resolve_device
from .._spec import absolute_spec, is_spec
from ..attacks import AttackSettings
from ..datasets import ArrayDataset, open_dataset
from ..measures.settings import MeasureSettings
from ..runs import Run
from . import executors, worker
from .assemble import assemble, diagnosis_json
from .discover import CheckpointEntry, Discovery, discover_checkpoints, promote_lone_markers
from .settings import SPLITS, TrajectorySettings, TrajectoryWarning, check_run_options, json_normal
from .wiring import read_headers, resolve_run_wiring
from .store import CheckpointResult, clean_stale_tmp, load_cached, result_metadata, result_path, write_parquet

__all__ = ["analyse_trajectory"]


def _data_source(data: Any, splits: Sequence[str]) -> tuple[str, dict | None]:
    """``(name for the settings, {split: LabelledDataset} held in memory or None)``.

    A name or ``file.py:fn`` is read by each worker itself; data the caller holds travels with the settings and
    is named by a digest of its source, shape and labels (so a resumed run recognises it)."""
    if isinstance(data, str):  # a file spec made absolute: workers may run in another folder
        return (absolute_spec(data, "dataset") if is_spec(data) else data), None
    given = dict(data) if isinstance(data, Mapping) else {"test": data}
    missing = [s for s in splits if s not in given]
    if missing:
        raise ValueError(f"no {' or '.join(missing)} data given: pass data={{'train': ..., 'test': ...}} or "
                         f"splits={list(given)}")
    held = {split: open_dataset(given[split], split) for split in splits}
    h = hashlib.blake2b(digest_size=8)
    for split, ds in held.items():
        h.update(f"{split}|{type(ds).__name__}|{ds.source}|{ds.info.input_shape}|".encode())
        h.update(np.ascontiguousarray(ds.targets).tobytes())
        if isinstance(ds, ArrayDataset):  # images in memory: their bytes too
            x = ds.x.numpy() if hasattr(ds.x, "numpy") else ds.x
            h.update(np.ascontiguousarray(x).tobytes())
    return f"in-memory:{h.hexdigest()}", held


def _history_splits(histories: bool | str | Sequence[str], splits: Sequence[str]) -> list[str]:
    """The splits whose per-sample histories to write (``[]``: none); each must be measured."""
    if histories is False or histories is None:
        return []
    chosen = ["train"] if histories is True else [histories] if isinstance(histories, str) else list(histories)
    missing = [sp for sp in chosen if sp not in splits]
    if missing:
        raise ValueError(f"histories for split(s) {', '.join(missing)} need them measured: splits={list(splits)} "
                         f"(add {', '.join(missing)} to splits)")
    return chosen


def _default_run_name(discovery: Discovery) -> str:
    parents = {e.path.resolve().parent for e in discovery.entries}
    if len(parents) == 1:
        return parents.pop().name
    return os.path.commonpath([str(p) for p in parents]).rstrip(os.sep).split(os.sep)[-1] or "run"


def _note_optimizer_states(discovery: Discovery) -> None:
    states = discovery.optimizer_states
    if states:
        names = ", ".join(Path(p).name for p in states[:3]) + (" ..." if len(states) > 3 else "")
        warnings.warn(f"skipped {len(states)} optimizer-state file(s) ({names}): they hold no model",
                      TrajectoryWarning, stacklevel=3)


def analyse_trajectory(paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike], arch: str | None = None,
                       data: Any = "digits", *, out_dir: str | os.PathLike, attack: str | AttackSettings = "pgd",
                       options: MeasureSettings | None = None, eps: float | None = None, n: int | str | None = 500,
                       splits: Sequence[str] = SPLITS, data_root: str | os.PathLike | None = None,
                       data_args: dict | None = None, executor: str = "serial", workers: int | None = None,
                       threads: int | None = None, ray_address: str | None = None, trusted: bool = False,
                       run: str | None = None, retry_delay: float = 1.0, progress: bool = True,
                       histories: bool | Sequence[str] = False, **fields: Any) -> pd.DataFrame:
    """Measure every checkpoint of a run and write a resumable run directory.

    Args:
        paths_or_dir: checkpoint directory, glob pattern or list of checkpoint files. Optimizer states
            (``opt_12.pth``) are skipped with one note; best-model copies (``model_best.pth``) are matched to
            the epoch they hold (``attrs["markers"]``) instead of being measured.
        arch: registered architecture (``landscape.list_models()``); ``arch_kwargs`` go to its constructor.
        data: a dataset name (``landscape.datasets.list_datasets()``: digits, cifar10, cifar100, svhn,
            tiny-imagenet, imagefolder, npz) read from ``data_root`` with options ``data_args``; your own function
            as ``"path/to/file.py:fn"`` (process and Ray workers import it themselves); or data you hold:
            ``(x, y)`` tensors or a torch ``Dataset`` (the test split), or ``{"train": ..., "test": ...}``.
        out_dir: run directory to write (created); results already there with a matching fingerprint are
            reused.
        measures: measure names (``landscape.measures.MEASURES``); None = ``measure``'s default.
        n: samples per split (deterministic stratified subset; None or ``"all"`` = all, streamed batch by batch
            when it does not fit in memory).
        attack: the attack the measures use: an :class:`~landscape.attacks.AttackSettings` (e.g.
            ``AttackSettings.official(8/255)``), or ``"pgd"``, ``"fgsm"`` or ``"official"`` (the official
            evaluation attack: PGD-10, step eps/4, no random start) with the loose fields ``eps`` (in [0, 1] pixel
            units; default: the dataset's, 8/255 for the image sets and 0.1 for digits), ``steps``,
            ``step_size``, ``norm``, ``random_start`` in ``fields``.
        options: the measure options as one :class:`~landscape.measures.settings.MeasureSettings`, or its loose
            fields in ``fields`` (``measures``, ``batch_size``, ``seed``, ``eig_iters``, ``hvp_method``,
            ``dtype``).
        splits: which of ``("train", "test")`` to measure.
        executor: ``"serial"``, ``"process"`` (local worker processes) or ``"ray"``.
        workers: parallel workers (process and ray executors); default one per GPU for
            ``executor="process", device="cuda"``, else 1.
        threads: torch threads per process/ray worker; default ``max(1, cores // workers)``. On a
            machine busy with other work, 1 thread per worker is often faster and steadier.
        ray_address: join this Ray cluster instead of starting a local one with ``num_cpus=workers``.
        trusted: allow full unpickling of checkpoints (runs code stored in them: only for your own files).
        **fields: the other fields of :meth:`TrajectorySettings.create`: the loose attack and measure fields
            above, ``arch_kwargs`` (constructor arguments), ``mean``/``std`` (wrap the model in ``Normalized``;
            inputs stay in [0, 1]), ``device`` (``"cuda"`` with the process executor spreads the workers over
            all GPUs). ``seed`` seeds the data subset, the attack's random start and random directions.
        run: value of the ``run`` column (default: the checkpoint directory's name).
        retry_delay: seconds before re-checking a checkpoint that failed to load (still being written?).
        progress: show a progress bar over checkpoints.
        histories: also write the per-sample history table ``histories.parquet`` (stable sample ids, every
            epoch; :mod:`landscape.trajectory.histories`) for the train split (True) or the given splits;
            streamed from the per-checkpoint results, one checkpoint in memory at a time.

    Returns:
        The trajectory table, one row per (epoch, split), columns ``run, epoch, checkpoint, split, n,
        acc_clean, acc_adv, loss_clean, loss_adv, <m>_mean, <m>_median, <m>_q10, <m>_q90, nonfinite, error``
        (accuracies as fractions; ``epoch`` as the trainer numbered it, int64, nullable Int64 when some
        epoch is unknown). ``attrs`` holds ``failed`` (number of failed checkpoints), ``failed_checkpoints``,
        ``computed``, ``reused``, ``duplicates`` (``{epoch: [checkpoints]}``), ``unparsed`` (names holding no
        epoch), ``no_epoch`` (checkpoints whose epoch stayed unknown), ``skipped`` (non-checkpoint files),
        ``optimizer_states``, ``markers`` (best-model copies and their epoch) and ``out_dir``.

    Raises:
        LandscapeError: no checkpoints found; Ray requested but not installed.
        ValueError, TypeError: bad settings (named with the allowed values).
    """
    from .._progress import tqdm  # quiet off a terminal

    from ..models import create_model

    executors.check_executor(executor)
    check_run_options(workers, threads)
    name, held = _data_source(data, splits)
    if eps is None and not isinstance(attack, AttackSettings):  # the dataset's radius; opening reads file lists
        first = held[next(iter(held))] if held else open_dataset(name, "test" if "test" in splits else splits[0],
                                                                  root=data_root, **dict(data_args or {}))
        eps = first.info.eps
    loose_eps = {} if isinstance(attack, AttackSettings) else {"eps": eps}
    settings = TrajectorySettings.create(
        arch, data=name, attack=attack, options=options, n=n, splits=splits, data_args=data_args, trusted=trusted,
        data_obj=held, data_root=None if data_root is None else os.path.abspath(os.path.expanduser(data_root)),
        **loose_eps, **fields)  # the data root made absolute for workers
    history_splits = _history_splits(histories, settings.splits)
    if arch is not None:  # unknown name or bad arguments: fail before the run starts
        create_model(arch, **dict(settings.arch_kwargs))
    discovery = discover_checkpoints(paths_or_dir)
    headers = read_headers(discovery, trusted)  # each file's structure read once, for epochs and the wiring
    discovery = promote_lone_markers(discovery, lambda p: getattr(headers.get(str(p)), "epoch", None))
    settings = resolve_run_wiring(discovery, settings, headers).settings  # one wiring for every checkpoint
    if executor == "ray":
        executors.import_ray()
    else:  # a Ray driver may lack the workers' GPUs, so only local runs check the device up front
        resolve_device(settings.device)
    for split in settings.splits:  # unknown dataset or missing files: a user error before the run starts
        worker.open_split(settings, split)
    _note_optimizer_states(discovery)

    out = Path(out_dir)
    results_dir = out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(out, results_dir)
    settings_fp = settings.fingerprint()

    outcomes: dict[str, dict[str, Any]] = {}  # key -> {"samples", "stored_epoch", "error", "weights"}
    todo: list[CheckpointEntry] = []
    for entry in discovery.entries:
        cached = load_cached(result_path(results_dir, entry), entry, settings_fp)
        if cached is not None:
            outcomes[entry.key] = cached
        else:
            todo.append(entry)
    reused = len(outcomes)

    bar = tqdm(total=len(discovery.entries), initial=reused, desc="trajectory", unit="ckpt",
               disable=not progress, leave=False)

    def on_result(entry: CheckpointEntry, result: CheckpointResult) -> None:
        target = result_path(results_dir, entry)
        if result.error is None:
            epoch = result.stored_epoch if result.stored_epoch is not None else entry.name_epoch
            rows = result.samples.copy()
            rows.insert(0, "checkpoint", str(entry.path))
            rows.insert(0, "epoch", pd.array([epoch] * len(rows), dtype="Int64"))
            try:
                write_parquet(rows, target, result_metadata(result, entry, settings_fp))
            except OSError as exc:  # e.g. disk full: this checkpoint fails, the run goes on
                result = dataclasses.replace(result, samples=None, stored_epoch=None,
                                             error=f"cannot write {target.name}: {worker.one_line(exc)}")
        if result.error is not None and target.exists():
            target.unlink()  # an old result for a file that now fails is stale
        outcomes[entry.key] = {"samples": result.samples, "stored_epoch": result.stored_epoch,
                               "error": result.error, "weights": result.weights}
        bar.update(1)
        if result.error is not None:
            where = "" if str(entry.path) in result.error else f"{entry.path}: "
            bar.write(f"landscape: {where}{result.error}")

    if workers is None:
        workers = executors.default_workers(executor, settings.device)
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    try:
        if todo:
            executors.RUNNERS[executor](todo, settings, retry_delay, on_result, workers=workers, threads=threads,
                                        address=ray_address)
    finally:
        bar.close()
        worker.clear_data_cache()

    table, samples, report = assemble(discovery, outcomes, settings, run or _default_run_name(discovery))
    folder = Run(out)  # the run folder's files, written atomically
    folder.write("trajectory", table)
    folder.write("samples", samples)
    folder.write("settings", json_normal({
        "settings": settings_fp, "run": table["run"].iloc[0] if len(table) else run,
        "checkpoints": [str(e.path) for e in discovery.entries], **report, "computed": len(todo), "reused": reused}))
    folder.write("diagnosis", json_normal(diagnosis_json(table)))
    if history_splits:
        from .histories import write_histories

        write_histories(out, splits=history_splits)
    table.attrs.update(report)
    table.attrs.update({"computed": len(todo), "reused": reused, "out_dir": str(out), "eps": settings.eps})
    return table
