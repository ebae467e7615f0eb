"""Finding a run's checkpoints and reading epochs from their names.

A run folder holds more than model checkpoints. Besides logs and tables (skipped by suffix), training code
writes files that look like checkpoints but are not one epoch's model:

* optimizer states (Rice et al. 2020 write ``opt_{epoch}.pth`` next to every ``model_{epoch}.pth``): listed
  in ``Discovery.optimizer_states`` and never measured;
* *markers*: a copy of the best model (``model_best.pth``; ``model_val.pth`` when selected on a validation
  set; the AdvLC repo's ``<id>_pgd``, ``<id>_acc`` and ``<id>_swa_pgd``, copies of the epoch with the best PGD or
  clean accuracy): listed in ``Discovery.markers`` and matched to the epoch whose weights they hold, never
  measured as an epoch of their own.

The AdvLC repo names its files without a suffix (``<id>_end``, ``<id>_swa_end``); in a folder, a file without a
suffix is taken when its first bytes are a checkpoint's (a zip archive, a pickle or safetensors).
"""
from __future__ import annotations

import dataclasses
import glob as globmod
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .._base import LandscapeError
from ..checkpoints.formats import sniff

__all__ = ["CHECKPOINT_SUFFIXES", "CheckpointEntry", "Discovery", "checkpoint_stem", "discover_checkpoints",
           "marker_kind", "is_optimizer_state", "parse_epoch", "promote_lone_markers"]

CHECKPOINT_SUFFIXES = (".pth.tar", ".pt", ".pth", ".tar", ".ckpt", ".safetensors", ".bin")
_NOT_CHECKPOINTS = {".json", ".csv", ".parquet", ".png", ".pdf", ".svg", ".jpg", ".txt", ".log", ".md", ".yaml",
                    ".yml", ".html", ".tmp", ".npz", ".npy", ".py", ".sh", ".toml", ".ini", ".out", ".err"}

# an epoch token: "epoch12", "epoch_12", "epoch=12", "ep-3", "e12", "model_e001"; the word must not be glued
# to a preceding letter (so "resnet18" and "wide12" are not epochs).
_EPOCH_TOKEN = re.compile(r"(?:^|[^a-z])(?:epoch|ep|e)[_\-=]?(\d+)(?![0-9])", re.IGNORECASE)
# a trailing number: "model_12", "run-7", or a name that is only a number: "12"
_TRAILING = re.compile(r"(?:^|[_\-.])(\d+)$")
# optimizer state: "opt_12", "optim-3", "optimizer_12", "optimizer"
_OPTIMIZER = re.compile(r"^(?:opt|optim|optimizer)(?:[_\-.=]|$)", re.IGNORECASE)
# a copy of the selected model: "model_best", "best", "checkpoint_best", "model_val" (Rice et al.'s --val)
_MARKER = re.compile(r"^(?:.*[_\-.])?(best)$|^(?:model|checkpoint|ckpt)[_\-.](val)$|^.+_(?:swa_)?(pgd|acc)$",
                     re.IGNORECASE)


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
    or ``.`` (``model_12.pt``) or a name that is only digits (``12.pt``). The number is returned as written
    (Rice et al.'s ``model_0.pth`` is epoch 0). Official AdvLC names (``{id}_end.pth.tar``, ``_acc``,
    ``_pgd``) carry no epoch in the name: their stored ``epoch`` is used.

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


def is_optimizer_state(name: str | os.PathLike) -> bool:
    """True for optimizer-state file names (``opt_12.pth``, ``optimizer_3.pt``, ``optim.pth``)."""
    return bool(_OPTIMIZER.match(checkpoint_stem(Path(name).name)))


def marker_kind(name: str | os.PathLike) -> str | None:
    """``"best"`` for ``model_best.pth``/``best.pt``/``resnet18_best.pth``, ``"val"`` for ``model_val.pth``,
    ``"pgd"``/``"acc"`` for the AdvLC repo's ``<id>_pgd``/``<id>_acc`` (and ``_swa_pgd``), else None: copies of
    a selected model, not an epoch of their own."""
    match = _MARKER.match(checkpoint_stem(Path(name).name))
    return next(g for g in match.groups() if g).lower() if match else None


def natural_key(text: str) -> list:
    """Sort key that orders ``e2`` before ``e10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _is_checkpoint_name(name: str) -> bool:
    return name.lower().endswith(CHECKPOINT_SUFFIXES) and not name.startswith(".")


def _is_suffixless_checkpoint(path: Path) -> bool:
    """A file without a suffix (the AdvLC repo's ``<id>_end``) whose first bytes are a checkpoint's."""
    if path.name.startswith(".") or path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            return sniff(f.read(16)) != "unknown"
    except OSError:
        return False


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
    """Result of :func:`discover_checkpoints`: the checkpoints in natural name order, plus what was left out.

    Attributes:
        entries: the model checkpoints to measure.
        skipped: files that are not checkpoints (``.json``, ``.csv``, ``.png``, ...).
        unparsed: checkpoints whose name holds no epoch.
        optimizer_states: optimizer-state files (``opt_{epoch}.pth``), not measured.
        markers: ``{path: kind}`` for copies of a selected model (``model_best.pth`` -> ``"best"``), not
            measured as epochs.
    """

    entries: list[CheckpointEntry]
    skipped: list[str]
    unparsed: list[str]
    optimizer_states: list[str] = dataclasses.field(default_factory=list)
    markers: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def paths(self) -> list[Path]:
        return [e.path for e in self.entries]


def _list_source(source) -> tuple[list[Path], list[str], str, bool]:
    """(files, skipped, where, explicit) for a directory, glob, single file or sequence of files."""
    skipped: list[str] = []
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if os.path.isdir(text):
            files = [Path(text) / n for n in sorted(os.listdir(text)) if (Path(text) / n).is_file()]
        elif any(ch in text for ch in "*?["):
            files = [Path(p) for p in globmod.glob(text) if os.path.isfile(p)]
        elif os.path.isfile(text):
            if not _is_checkpoint_name(Path(text).name) and Path(text).suffix.lower() in _NOT_CHECKPOINTS:
                raise LandscapeError(f"{text} is not a checkpoint (looked for {', '.join(CHECKPOINT_SUFFIXES)})")
            return [Path(text)], [], text, True
        else:
            raise FileNotFoundError(f"no such checkpoint directory or file: {text}")
        keep = [f for f in files if _is_checkpoint_name(f.name) or _is_suffixless_checkpoint(f)]
        skipped = sorted(str(f) for f in files if f not in keep)
        return keep, skipped, text, False
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
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
        return files, skipped, "the given paths", True
    raise TypeError(f"checkpoints must be a directory, a glob or a list of paths, got {type(source).__name__}")


def discover_checkpoints(source: str | os.PathLike | Sequence[str | os.PathLike]) -> Discovery:
    """Find checkpoints in a directory, a glob pattern or a list of paths, in natural name order.

    A directory (not recursive) and a glob keep only files ending in one of :data:`CHECKPOINT_SUFFIXES`
    and list the others in ``skipped``; an explicit list keeps every file it names except files with a
    known non-checkpoint suffix (``.json``, ``.csv``, ``.parquet``, ``.png``, ...). Optimizer states
    (:func:`is_optimizer_state`) are set apart in every case, markers (:func:`marker_kind`) whenever there
    is at least one other checkpoint (a lone ``model_best.pth`` is measured).

    Args:
        source: directory, glob pattern (``"runs/a/*.pt"``) or a sequence of file paths.

    Returns:
        :class:`Discovery` with one :class:`CheckpointEntry` per checkpoint.

    Raises:
        TypeError: ``source`` is not a path, string or sequence of them.
        FileNotFoundError: a directory or listed file that does not exist.
        LandscapeError: no model checkpoints found.
    """
    files, skipped, where, _ = _list_source(source)
    files = sorted(dict.fromkeys(files), key=lambda p: (natural_key(p.name), str(p)))
    optimizer = [str(p) for p in files if is_optimizer_state(p.name)]
    markers = {str(p): marker_kind(p.name) for p in files if marker_kind(p.name) is not None}
    models = [p for p in files if str(p) not in optimizer]
    files = [p for p in models if str(p) not in markers]
    if not files and markers:  # only best-model copies (e.g. one model_best.pth given): measure them
        files, markers = models, {}
    if not files:
        extra = ""
        if optimizer:
            extra = f"; only optimizer states: {', '.join(Path(p).name for p in optimizer[:3])}"
        raise LandscapeError(f"no checkpoints found in {where} (looked for "
                             f"{', '.join('*' + s for s in CHECKPOINT_SUFFIXES)}{extra})")
    stems = [checkpoint_stem(p.name) for p in files]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    entries = []
    for i, (path, stem) in enumerate(zip(files, stems)):
        key = stem if counts[stem] == 1 else f"{stem}-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
        entries.append(CheckpointEntry(path=path, key=key, name_epoch=parse_epoch(path.name), position=i + 1))
    unparsed = [str(e.path) for e in entries if e.name_epoch is None]
    return Discovery(entries=entries, skipped=skipped, unparsed=unparsed, optimizer_states=optimizer,
                     markers=markers)


def promote_lone_markers(discovery: Discovery, stored_epoch) -> Discovery:
    """Measure the best-model copies that hold an epoch no other checkpoint holds.

    The AdvLC repo overwrites ``<id>_end`` every epoch and keeps the best epoch only as ``<id>_pgd``: that copy is
    then the run's only record of its best epoch, so it is measured as an epoch of its own. A copy whose stored
    epoch is unknown, or is one of the measured checkpoints' epochs, stays a marker.

    Args:
        discovery: what :func:`discover_checkpoints` found.
        stored_epoch: ``path -> int | None``, the epoch a file stores (read without its weights).
    """
    if not discovery.markers:
        return discovery
    held = {e.name_epoch if e.name_epoch is not None else stored_epoch(e.path) for e in discovery.entries}
    lone = [p for p in discovery.markers if (epoch := stored_epoch(Path(p))) is not None and epoch not in held]
    if not lone:
        return discovery
    taken = {e.key for e in discovery.entries}
    entries = list(discovery.entries)
    for p in lone:
        path = Path(p)
        key = checkpoint_stem(path.name)
        if key in taken:
            key = f"{key}-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
        entries.append(CheckpointEntry(path=path, key=key, name_epoch=parse_epoch(path.name),
                                       position=len(entries) + 1))
    markers = {p: k for p, k in discovery.markers.items() if p not in lone}
    unparsed = discovery.unparsed + [p for p in lone if parse_epoch(Path(p).name) is None]
    return dataclasses.replace(discovery, entries=entries, markers=markers, unparsed=unparsed)
