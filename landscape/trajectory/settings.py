"""What a trajectory run computes (:class:`TrajectorySettings`) and how it runs (executor, workers, threads).

The settings carry the attack and the measure options whole (:class:`~landscape.attacks.AttackSettings`,
:class:`~landscape.measures.settings.MeasureSettings`), each validated once on construction, so a bad value
fails before any checkpoint is read and every worker measures with exactly what was asked.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..attacks import AttackSettings, attack_settings
from ..measures.settings import MeasureSettings

__all__ = ["RESULT_FORMAT", "SPLITS", "TrajectorySettings", "TrajectoryWarning", "check_run_options",
           "json_normal"]

SPLITS = ("train", "test")
RESULT_FORMAT = 2  # 2: per-sample rows carry sample_id. Bump when a result file's meaning changes: old results are then recomputed


class TrajectoryWarning(UserWarning):
    """Something about the checkpoints that the user should know (duplicated or unknown epochs, files
    skipped as optimizer states, a best-model copy matched to its epoch)."""


def _positive_int(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")


def check_run_options(workers: int | None, threads: int | None) -> None:
    """Validate the parallelism of a run (not part of the fingerprint)."""
    _positive_int("workers", workers, optional=True)
    _positive_int("threads", threads, optional=True)


def json_normal(obj: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, so two equal settings compare equal after a JSON round trip."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in settings")


@dataclasses.dataclass(frozen=True)
class TrajectorySettings:
    """Everything that decides a checkpoint's numbers (stored in the fingerprint; a change recomputes).

    Validated on construction (``ValueError``/``TypeError`` naming the bad value and the allowed ones).
    """

    arch: str | None
    data: str = "digits"
    arch_kwargs: tuple[tuple[str, Any], ...] = ()
    data_args: tuple[tuple[str, Any], ...] = ()
    n: int | None = 500
    splits: tuple[str, ...] = SPLITS
    attack: AttackSettings = AttackSettings()
    options: MeasureSettings = MeasureSettings()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    data_root: str | None = None
    device: str = "cpu"
    trusted: bool = False  # how to unpickle, not what is computed: left out of the fingerprint
    # data held by the caller ({split: LabelledDataset}); ``data`` then names it by a digest of its labels,
    # shape and source, which the fingerprint stores instead
    data_obj: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.arch is not None and not isinstance(self.arch, str):
            raise TypeError(f"arch must be a registered architecture name or None (the files record it), got "
                            f"{type(self.arch).__name__}")
        if not isinstance(self.data, str):
            raise TypeError(f"data must be a dataset name or 'file.py:fn', got {type(self.data).__name__}")
        splits = self.splits
        if isinstance(splits, str) or not splits:
            raise ValueError(f"splits must be a non-empty sequence of 'train'/'test', got {splits!r}")
        if any(s not in SPLITS for s in splits) or len(set(splits)) != len(splits):
            raise ValueError(f"bad splits {list(splits)!r} (allowed: each of {', '.join(SPLITS)} at most once)")
        _positive_int("n", self.n, optional=True)
        if not isinstance(self.attack, AttackSettings):
            raise TypeError(f"attack must be an AttackSettings, got {type(self.attack).__name__}")
        if not isinstance(self.options, MeasureSettings):
            raise TypeError(f"options must be a MeasureSettings, got {type(self.options).__name__}")

    @property
    def eps(self) -> float:
        return self.attack.eps

    @property
    def seed(self) -> int:
        return self.options.seed

    @classmethod
    def create(cls, arch: str | None, *, attack: str | AttackSettings = "pgd", options: MeasureSettings | None = None,
               arch_kwargs: dict | None = None, data_args: dict | None = None, splits: Sequence[str] = SPLITS,
               n: int | str | None = 500, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               data_root: str | os.PathLike | None = None, device: str = "cpu", **loose: Any) -> TrajectorySettings:
        """Build settings from loose user values (lists, dicts, paths), normalised so that equal settings
        fingerprint equally.

        The attack is given whole (``attack=AttackSettings(...)``, or ``"official"`` for the official evaluation
        attack at ``eps``) or by name with its loose fields (``eps``, ``steps``, ``step_size``, ``norm``,
        ``random_start``); the measure options whole (``options=MeasureSettings(...)``) or as loose fields of
        :class:`~landscape.measures.settings.MeasureSettings` (``measures``, ``batch_size``, ``seed``,
        ``eig_iters``, ``hvp_method``, ``dtype``, and any field added there later).
        """
        attack_fields = [f.name for f in dataclasses.fields(AttackSettings) if f.name != "attack"]
        measure_fields = [f.name for f in dataclasses.fields(MeasureSettings)]
        attack_loose = {k: loose.pop(k) for k in attack_fields if k in loose}
        measure_loose = {k: loose.pop(k) for k in measure_fields if k in loose}
        if isinstance(measure_loose.get("measures"), str):
            raise TypeError(f"measures must be a list of names, got the string {measure_loose['measures']!r}")
        if isinstance(attack, AttackSettings) and attack_loose:
            raise ValueError(f"give the attack either whole or as {', '.join(sorted(attack_loose))}, not both")
        if isinstance(n, str) and n.lower() == "all":
            n = None
        return cls(arch=arch, arch_kwargs=tuple(sorted(dict(arch_kwargs or {}).items())),
                   data_args=tuple(sorted(dict(data_args or {}).items())), n=n,
                   splits=splits if isinstance(splits, str) else tuple(splits),
                   attack=attack_settings(attack, **attack_loose), options=MeasureSettings.from_loose(options,
                                                                                                  **measure_loose),
                   mean=None if mean is None else tuple(float(v) for v in mean),
                   std=None if std is None else tuple(float(v) for v in std),
                   data_root=None if data_root is None else os.fspath(data_root), device=str(device), **loose)

    def fingerprint(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("trusted", "data_obj")}
        d["attack"] = self.attack.to_dict()
        d["options"] = self.options.to_dict()
        d["arch_kwargs"] = dict(self.arch_kwargs)
        d["data_args"] = dict(self.data_args)
        d["format"] = RESULT_FORMAT
        return json_normal(d)
