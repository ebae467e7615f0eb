"""``Monitor``: measure a probe during training, write a live run folder, warn of robust overfitting."""
from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from .._base import LandscapeError, model_device, model_dtype
from .._io import atomic_write
from ..attacks import AttackSettings
from ..diagnose import best_index
from ..runs import Run, run_file
from ..trajectory.assemble import summary_row
from ..trajectory.worker import one_line
from .isolation import isolated
from .probe import arrow_table, checked_probe, fast_path, measure_columns
from .rules import DEFAULT_RULE, OverfitEvent

__all__ = ["DEFAULT_MEASURES", "DEFAULT_PROBE_N", "MONITOR_FORMAT", "Monitor", "StopTraining"]

#: measures recorded by default (names of :data:`landscape.measures.MEASURES`).
DEFAULT_MEASURES = ("grad", "curv_adv", "fo_share")
#: probe samples per split by default: the size the early-warning rule was tuned and evaluated with; its cost
#: per digits AT epoch is measured by ``benchmarks/bench_monitor.py`` (``docs/monitor.md``, "Cost").
DEFAULT_PROBE_N = 128
#: version of the monitor's entry in ``settings.json``.
MONITOR_FORMAT = 1
_SPLITS = ("train", "test")


class StopTraining(Exception):
    """Raised by the ``on_overfit="stop"`` hook (or yours) to end training; ``Monitor``'s ``with`` block
    swallows it, so ``with Monitor(...) as mon: train(..., on_epoch=mon.callback)`` simply stops."""

    def __init__(self, event: OverfitEvent | None = None):
        super().__init__(f"robust overfitting warned at epoch {event.epoch} (best epoch {event.best_epoch})"
                         if event is not None else "training stopped by the monitor")
        self.event = event


def _probe_splits(probe: Any, n: int | None, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{split: (x, y)}`` from ``(x, y)``, a Dataset or ``{"train": ..., "test": ...}`` (``n`` per split)."""
    from ..datasets import materialize, open_dataset, select

    if isinstance(probe, Mapping):
        unknown = sorted(set(probe) - set(_SPLITS))
        if unknown or not probe:
            raise ValueError(f"probe: keys must be among {list(_SPLITS)}, got {sorted(map(str, probe))}")
        given = dict(probe)
    else:
        given = {"test": probe}
    if "test" not in given:
        raise ValueError("probe: a 'test' probe is needed (the early warning watches the test split)")
    out = {}
    for split in [s for s in _SPLITS if s in given]:
        value = given[split]
        if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], torch.Tensor):
            x, y = value
            if not isinstance(y, torch.Tensor):
                y = torch.as_tensor(y)
            if x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise ValueError(f"probe: {split} x and y must hold the same, non-zero number of samples, got "
                                 f"{x.shape[0]} and {y.shape[0]}")
            value = (x, y.long())  # uint8 images are scaled by open_dataset
        elif not isinstance(value, Dataset):
            raise TypeError(f"probe: {split} must be (x, y) tensors or a Dataset, got {type(value).__name__}")
        try:
            ds = select(open_dataset(value, split), n if n is not None and n < _len(value) else None, seed)
            out[split] = materialize(ds, workers=0)
        except (ValueError, TypeError, LandscapeError) as exc:
            raise ValueError(f"probe: {split}: {one_line(exc)}") from None
    return out


def _len(value) -> int:
    return int(value[0].shape[0]) if isinstance(value, (tuple, list)) else len(value)


def _digest(splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for split, (x, y) in splits.items():
        h.update(f"{split}|{tuple(x.shape)}|".encode())
        h.update(np.ascontiguousarray(x.detach().cpu().numpy()).tobytes())
        h.update(np.ascontiguousarray(y.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


class Monitor:
    """Measure a probe set during training: a live run folder and an online early warning of robust overfitting.

    Three lines in a training script::

        with Monitor(model, (x_val, y_val), eps=8/255, out="runs/mine/monitor", on_overfit="stop") as mon:
            for epoch in range(1, epochs + 1):
                train_one_epoch(...); mon.step(epoch)

    or ``train(..., on_epoch=mon.callback)``. Each :meth:`step` attacks the probe and computes the measures with
    :func:`landscape.measures.measure` (model in eval mode), appends one row per split to ``trajectory.parquet``
    (the layout ``landscape trajectory`` writes: ``landscape diagnose``/``report`` read the folder while training
    runs), and checks the early-warning rule. Training is untouched bit for bit: the monitor restores every RNG,
    the model's modes, its buffers and ``.grad`` (:func:`landscape.monitor.isolation.isolated`) and seeds its own
    attack from ``seed``.

    Args:
        model: the network being trained (inputs in [0, 1]).
        probe: ``(x, y)`` tensors or a Dataset (the test probe, e.g. a held-out validation set), or
            ``{"train": ..., "test": ...}``; ``n`` samples per split are kept (stratified, seeded by ``seed``).
        eps: attack radius in [0, 1] pixel units (the training radius).
        every: measure every this many epochs (:meth:`step` is a no-op in between). Default 1.
        measures: measure names (:data:`landscape.measures.MEASURES`). Default :data:`DEFAULT_MEASURES`; the
            default rule needs ``curv_adv`` and ``fo_share``.
        out: the run folder to write (created). A folder that a monitor wrote before is continued (resume):
            epochs already there are kept, a re-measured epoch replaces its rows.
        attack: ``"pgd"`` (PGD-10, step 2.5·eps/10, random start), ``"fgsm"``, or an
            :class:`~landscape.attacks.AttackSettings` (then ``eps`` must match or be None).
        keep_best: keep ``model_best.pt`` in ``out``: the probe's best epoch by the official rule (highest test
            robust accuracy, latest epoch on ties).
        on_overfit: None, ``"stop"`` (raise :class:`StopTraining` at the warning; the ``with`` block swallows
            it) or a callable ``on_overfit(event)`` (save, change the AdvLC weight, raise StopTraining...).
            Called once, at the first warning.
        rule: the early-warning rule (:mod:`landscape.monitor.rules`); default :data:`DEFAULT_RULE`.
        n: probe samples per split. Default :data:`DEFAULT_PROBE_N`; None keeps all.
        batch_size: measure batch size. Default 128.
        seed: seeds the probe subset and the attack's random start (the same every epoch).
        samples: also write per-sample rows (``samples.parquet``, rewritten each step). Default False.
        run: the ``run`` column. Default: the folder's name.

    Raises:
        ValueError / TypeError: a bad argument, in one line naming it.
    """

    def __init__(self, model: nn.Module, probe: Any, *, eps: float | None = None, every: int = 1,
                 measures=DEFAULT_MEASURES, out: str | os.PathLike = "monitor", attack: str | AttackSettings = "pgd",
                 keep_best: bool = False, on_overfit: str | Callable[[OverfitEvent], Any] | None = None,
                 rule=DEFAULT_RULE, n: int | None = DEFAULT_PROBE_N, batch_size: int = 128, seed: int = 0,
                 samples: bool = False, run: str | None = None):
        from ..measures.registry import select

        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        for name, v in (("seed", seed), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {v!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"n must be an int >= 1 or None, got {n!r}")
        if not isinstance(keep_best, bool):
            raise TypeError(f"keep_best must be True or False, got {keep_best!r}")
        if not (on_overfit is None or on_overfit == "stop" or callable(on_overfit)):
            raise ValueError(f"on_overfit must be None, 'stop' or a callable(event), got {on_overfit!r}")
        if not callable(getattr(rule, "check", None)):
            raise TypeError(f"rule must have a check(curve) method (landscape.monitor.rules), got {rule!r}")
        if isinstance(measures, str):
            measures = [m.strip() for m in measures.split(",") if m.strip()]
        try:
            self.measures = tuple(s.name for s in select(list(measures)))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"measures: {str(exc).splitlines()[0]}") from None
        if isinstance(attack, AttackSettings):
            if eps is not None and float(eps) != attack.eps:
                raise ValueError(f"eps={eps!r} differs from attack.eps={attack.eps!r}; give one of them")
            settings = attack
        else:
            if attack not in ("pgd", "fgsm"):
                raise ValueError(f"attack must be 'pgd', 'fgsm' or an AttackSettings, got {attack!r}")
            if eps is None or isinstance(eps, bool) or not isinstance(eps, (int, float)) \
                    or not math.isfinite(eps) or not 0 < eps <= 1:
                raise ValueError(f"eps must be a number in (0, 1] (pixel units, e.g. 8/255), got {eps!r}")
            settings = AttackSettings(attack=attack, eps=float(eps), steps=10 if attack == "pgd" else 1)
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"out must be a folder, {out} is a file")
        self.model, self.every, self.attack, self.out = model, every, settings, out
        self.keep_best, self.on_overfit, self.rule, self.seed = keep_best, on_overfit, rule, seed
        self.batch_size, self.samples, self.n = batch_size, samples, n
        self.probe = _probe_splits(probe, n, seed)
        self.probe_digest = _digest(self.probe)
        self.folder = Run(out, name=run)
        self.run_name = run or self.folder.name
        self.event: OverfitEvent | None = None
        self.should_stop = False
        self.seconds: list[float] = []
        self._measure_cols = _measure_columns(self.measures)
        self._fast = fast_path(self.measures) and not samples  # else measure() itself (w_* measures, samples)
        table, self._samples = self._resume()
        self._resumed = table is not None
        self._rows: list[dict] = [] if table is None else [
            {k: (None if k == "error" and not isinstance(v, str) else v) for k, v in r.items()}
            for r in table.to_dict("records")]
        self._frame_cache: pd.DataFrame | None = table
        self._on_device: dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._caches: dict[str, _ColumnCache] = {}
        self._settings_written = False

    # ------------------------------------------------------------------------------------------ state
    def _identity(self) -> dict[str, Any]:
        return {"format": MONITOR_FORMAT, "probe": self.probe_digest, "attack": self.attack.to_dict(),
                "measures": list(self.measures), "seed": self.seed,
                "n": {s: int(x.shape[0]) for s, (x, _) in self.probe.items()}}

    def _resume(self) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        if self.out.is_dir():  # what a killed monitor left half-written (never a run file: writes are atomic)
            for tmp in self.out.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        if self.folder.find("trajectory") is None:
            return None, None
        try:
            settings = self.folder.read("settings")
        except (FileNotFoundError, LandscapeError):
            settings = {}
        old = settings.get("monitor", {}).get("identity") if isinstance(settings, dict) else None
        if old is None:
            raise ValueError(f"out: {self.out} holds a run folder not written by a Monitor; choose another out")
        if old != self._identity():
            diff = sorted(k for k in set(old) | set(self._identity()) if old.get(k) != self._identity().get(k))
            raise ValueError(f"out: {self.out} holds a monitor run with other settings ({', '.join(diff)}); "
                             "choose another out")
        (self.out / run_file("diagnosis")).unlink(missing_ok=True)  # stale until close() writes it again
        table = self.folder.read("trajectory")
        samples = self.folder.read("samples") if self.samples and self.folder.find("samples") else None
        events = settings["monitor"].get("events") or []
        if events:
            self.event = OverfitEvent(**events[0])
        self.seconds = list(settings["monitor"].get("seconds") or [])
        return table, samples

    @property
    def _table(self) -> pd.DataFrame | None:
        """The trajectory table (None before the first row), built from the rows when first asked for."""
        if not self._rows and not self._resumed:
            return None
        if self._frame_cache is None:
            self._frame_cache = self._frame(self._rows)
        return self._frame_cache

    @property
    def table(self) -> pd.DataFrame:
        """The trajectory table so far (one row per monitored epoch and split)."""
        return self._table.copy() if self._table is not None else pd.DataFrame()

    def curve(self, split: str = "test") -> pd.DataFrame:
        """The per-epoch rows of ``split`` so far, sorted by epoch (what the rule sees)."""
        t = self.table
        if t.empty:
            return t
        t = t[(t["split"] == split) & t["error"].isna()]
        return t.sort_values("epoch").reset_index(drop=True)

    # ------------------------------------------------------------------------------------------ steps
    def callback(self, epoch: int, model: nn.Module | None = None, optimizer=None) -> OverfitEvent | None:
        """``train(..., on_epoch=mon.callback)``: :meth:`step` (``model`` must be the monitored one)."""
        if model is not None and model is not self.model:
            raise ValueError("callback: the model given is not the one this Monitor watches")
        return self.step(epoch)

    def step(self, epoch: int) -> OverfitEvent | None:
        """Measure the probe after ``epoch`` (when ``epoch % every == 0``), write the folder, check the rule.

        Returns the warning when it fires at this epoch (else None). Training state is left as it was.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        epoch = int(epoch)
        if epoch % self.every:
            return None
        start = time.perf_counter()
        with isolated(self.model):
            rows = self._measure(epoch)
            self._record(epoch, rows)
            fired = self._check(epoch)
            self._write()
            if fired is not None:
                self._write_diagnosis()
            self.seconds.append(time.perf_counter() - start)  # written with settings.json at its next write
        if fired is not None:
            self._hook(fired)
        return fired

    def _measure(self, epoch: int) -> dict[str, Mapping[str, np.ndarray] | pd.DataFrame | str]:
        """``{split: columns}`` of ``measure(model, probe)`` (the same numbers; :mod:`.probe` skips its per-call
        setup), or the error's line."""
        from ..measures import measure

        device = model_device(self.model)
        where = (str(device), str(model_dtype(self.model)))
        rows: dict[str, Mapping[str, np.ndarray] | pd.DataFrame | str] = {}
        for split, (x, y) in self.probe.items():
            key = (split, *where)
            try:
                if key not in self._on_device:  # checked once per device/dtype, as measure() checks each call
                    self._on_device = {k: v for k, v in self._on_device.items() if k[1:] == where}
                    self._on_device[key] = checked_probe(self.model, x, y, device)
                xd, yd = self._on_device[key]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # NaN/Inf are recorded in `nonfinite`
                    if self._fast:
                        rows[split] = measure_columns(self.model, xd, yd, settings=self.attack,
                                                      measures=self.measures, batch_size=self.batch_size,
                                                      seed=self.seed)
                    else:
                        rows[split] = measure(self.model, xd, yd, settings=self.attack,
                                              measures=list(self.measures), batch_size=self.batch_size,
                                              seed=self.seed)
            except Exception as exc:  # noqa: BLE001 -- a failed step is a row with its error, never a crash
                rows[split] = one_line(exc)
        return rows

    def _record(self, epoch: int, rows: dict[str, Mapping[str, np.ndarray] | pd.DataFrame | str]) -> None:
        ckpt = f"epoch {epoch} (monitor, in memory)"
        head = {"run": self.run_name, "epoch": epoch, "checkpoint": ckpt, "arch": type(self.model).__name__}
        new, frames = [], []
        for split, value in rows.items():
            if isinstance(value, str):
                new.append({**head, "split": split, "n": 0, "nonfinite": 0, "error": value})
                continue
            new.append({**head, "split": split, **summary_row(value, self._measure_cols), "error": None})
            if self.samples:
                s = value.copy()
                s.insert(0, "split", split)
                s.insert(0, "checkpoint", ckpt)
                s.insert(0, "epoch", epoch)
                frames.append(s)
        self._rows = [r for r in self._rows if r["epoch"] != epoch] + new
        self._rows.sort(key=lambda r: (r["epoch"], _SPLITS.index(r["split"]) if r["split"] in _SPLITS else 9))
        self._frame_cache = None  # built again when asked for (the writes and the rule do not need it)
        if self.samples and frames:
            kept = [] if self._samples is None else [self._samples[self._samples["epoch"] != epoch]]
            self._samples = pd.concat([*kept, *frames], ignore_index=True)

    def _frame(self, rows: list[dict], cache: str | None = None) -> pd.DataFrame:
        """The trajectory table of ``rows`` with the column types ``landscape trajectory`` writes."""
        return pd.DataFrame(self._columns(rows, cache))

    def _columns(self, rows: list[dict], cache: str | None = None) -> dict[str, Any]:
        """``{column: values}`` of :meth:`_frame` (numpy arrays, object ``pd.array`` values for the text).
        ``cache`` names a :class:`_ColumnCache` that keeps the values of the rows seen before (a list that
        grows by appends costs only its new rows, not a pass over every row each epoch)."""
        stat = ["acc_clean", "acc_adv", "loss_clean", "loss_adv"] + [
            f"{m}_{k}" for m in self._measure_cols for k in ("mean", "median", "q10", "q90")]
        names = ("run", "epoch", "checkpoint", "split", "n", *stat, "arch", "nonfinite", "error")
        if cache is None:
            lists = _ColumnCache(names, set(stat)).update(rows)
        else:
            lists = self._caches.setdefault(cache, _ColumnCache(names, set(stat))).update(rows)
        data: dict[str, Any] = {}
        for c in names:
            values = lists[c]
            if c in ("epoch", "n", "nonfinite"):
                data[c] = np.asarray(values, dtype=np.int64)
            elif c in stat:
                data[c] = np.asarray(values, dtype=float)
            else:
                data[c] = pd.array(values, dtype=object)
        return data

    def _check(self, epoch: int) -> OverfitEvent | None:
        if self.event is not None and not self.keep_best:  # warned once already: nothing left to check
            return None
        # curve("test") without building the whole table: the rows are kept sorted by epoch
        test = self._frame([r for r in self._rows if r["split"] == "test" and not isinstance(r["error"], str)],
                           cache="curve")
        if self.keep_best and len(test):
            self._keep_best(epoch, test)
        if self.event is not None:
            return None
        event = self.rule.check(test)
        if event is None:
            return None
        if self.keep_best:
            event = OverfitEvent(**{**event.to_dict(), "checkpoint": str(self.out / "model_best.pt")})
        self.event = event
        self._settings_written = False
        return event

    def _keep_best(self, epoch: int, test: pd.DataFrame) -> None:
        acc = test["acc_adv"].to_numpy(dtype=float)
        if not np.isfinite(acc).any():
            return
        i = best_index(acc)
        if int(test["epoch"].iloc[i]) == epoch:  # this epoch is the new best: save it (the model is as trained, in memory)
            from ..checkpoints import save_checkpoint

            self.out.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.out / "model_best.pt", self.model, epoch=epoch,
                            best_pgd=100 * float(acc[i]))
            self._settings_written = False  # the marker moved

    def _hook(self, event: OverfitEvent) -> None:
        self.should_stop = self.on_overfit == "stop" or self.should_stop
        if self.on_overfit == "stop":
            raise StopTraining(event)
        if callable(self.on_overfit):
            self.on_overfit(event)

    # ------------------------------------------------------------------------------------------ files
    def _write(self, force: bool = False) -> None:
        """Write the tables (every step) and ``settings.json`` (when its content changed, or ``force``)."""
        from ..trajectory.settings import json_normal

        self.out.mkdir(parents=True, exist_ok=True)
        if self.samples and self._samples is not None:
            self.folder.write("samples", self._samples)
        if self._rows or self._resumed:  # one atomic parquet write, straight from the rows (no DataFrame)
            import pyarrow.parquet as pq

            table = arrow_table(self._columns(self._rows, cache="all"))
            atomic_write(self.folder.path("trajectory"), lambda tmp: pq.write_table(table, tmp))
        if self._settings_written and not force:
            return
        self._settings_written = True
        markers = []
        best = self.out / "model_best.pt"
        if self.keep_best and best.is_file():
            markers = [{"checkpoint": str(best), "kind": "best", "epoch": self._best_epoch(), "meta": {},
                        "error": None}]
        self.folder.write("settings", json_normal({
            "run": self.run_name, "markers": markers,
            "monitor": {"identity": self._identity(), "every": self.every, "rule": repr(self.rule),
                        "events": [self.event.to_dict()] if self.event is not None else [],
                        "seconds": [round(s, 6) for s in self.seconds]}}))

    def _write_diagnosis(self) -> None:
        from ..trajectory.assemble import diagnosis_json
        from ..trajectory.settings import json_normal

        if self._table is not None and len(self._table):
            self.folder.write("diagnosis", json_normal(diagnosis_json(self._table)))

    def _best_epoch(self) -> int | None:
        test = self.curve("test")
        acc = test["acc_adv"].to_numpy(dtype=float) if len(test) else np.array([])
        return int(test["epoch"].iloc[best_index(acc)]) if np.isfinite(acc).any() else None

    def close(self) -> None:
        """Write ``diagnosis.json`` (the cached diagnosis, left out of the per-epoch writes for speed: ``landscape
        diagnose`` recomputes it from ``trajectory.parquet`` meanwhile) and drop the probe's device copies."""
        if self._table is not None:
            self._write(force=True)
        self._write_diagnosis()
        self._on_device.clear()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopTraining)

    def __repr__(self) -> str:
        return f"Monitor(out={str(self.out)!r}, measures={list(self.measures)}, every={self.every})"


class _ColumnCache:
    """Per-column value lists of a list of rows that grows at its end: :meth:`update` adds only the rows after
    the longest unchanged prefix (the same row objects), so a replaced or re-sorted row rebuilds from there."""

    def __init__(self, names, floats):
        self.names, self.floats = tuple(names), floats
        self.rows: list[dict] = []
        self.values: dict[str, list] = {c: [] for c in self.names}

    def update(self, rows: list[dict]) -> dict[str, list]:
        k = 0
        for k, (a, b) in enumerate(zip(self.rows, rows), start=1):
            if a is not b:
                k -= 1
                break
        if k < len(self.rows):
            for c in self.names:
                del self.values[c][k:]
        for r in rows[k:]:
            for c in self.names:
                v = r.get(c)
                self.values[c].append(np.nan if v is None and c in self.floats else v)
        self.rows = list(rows)
        return self.values


def _measure_columns(measures) -> list[str]:
    from ..measures.registry import select

    return [c for s in select(list(measures)) for c in s.columns]
