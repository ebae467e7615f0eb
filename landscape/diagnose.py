"""Robust-overfitting diagnosis from a trajectory table (no models needed).

Reads the long table written by ``analyse_trajectory`` (``trajectory.parquet``) or by training
(``metrics.csv``): one row per (epoch, split) with ``acc_adv`` (robust accuracy as a fraction in [0, 1]),
``loss_adv`` and measure summaries ``<m>_mean``.

Definitions (``split`` is the evaluation split, ``"test"`` by default):

* **best epoch** — the official rule of Li & Spratling's code: the epoch of the highest robust (PGD-10)
  accuracy on the full test set, the **latest** epoch on ties (:func:`best_index`, :func:`best_epoch`). When
  the training log (``metrics.csv``, evaluated on the test set every epoch) is given as ``log=``, it is the
  source of the best epoch, the last epoch, the gap and the onset; the analysed subset of the trajectory
  table is used only where no log is available. :attr:`Diagnosis.best_source` says which one was used;
* **gap** — best minus last-epoch robust accuracy, in percentage points;
* **RO onset** — the first epoch after the best one from which the robust accuracy stays at least
  ``threshold`` points below the best until the end of training (None when it never does). The default
  threshold is ``max(1, 2·SE)`` points, SE = 100·sqrt(p(1−p)/n) the binomial standard error of the best
  accuracy p measured on n samples (1 point when the table has no ``n``);
* **train–test gap** — train minus test robust accuracy at the last epoch, in points;
* **correlations** — Spearman and Pearson correlation, across the epochs from the best one on, of each
  measure ``<m>_mean`` (of each split) with the test robust loss ``loss_adv``, over the epochs where both are
  finite; fewer than 3 such epochs or a constant series give NaN (with a note). The Spearman ρ is
  :func:`spearman`, which the study's claims and the measure-vs-loss scatter use too.

A table with one epoch gives its measures and train–test gap only; a table whose ``run`` column holds
several runs goes to :func:`diagnose_runs` (one diagnosis per run).
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._base import LandscapeError
from .runs import Run, _with_run, find_training_log, load_tables, run_file, run_names

__all__ = ["MIN_EPOCHS_FOR_CORRELATION", "BEST_RULE", "BestEpoch", "Diagnosis", "best_epoch", "best_index",
           "best_last_epochs", "diagnose", "diagnose_runs", "diagnosis_of", "read_table", "read_training_log", "run_diagnoses",
           "source_label", "spearman"]

MIN_EPOCHS_FOR_CORRELATION = 3
_REQUIRED = ("epoch", "split", "acc_adv")
TRAINING_LOG = run_file("metrics")
BEST_RULE = "highest robust test accuracy, the latest epoch on ties (the official AdvLC rule)"
SOURCE_LOG = "training log (metrics.csv)"
SOURCE_TABLE = "analysed subset (trajectory table)"


def best_index(acc) -> int:
    """Index of the best of a (E,) robust-accuracy curve ordered by epoch: the highest value, the **latest**
    index on ties (the official rule: the code saves a new best checkpoint when ``acc >= best``); NaN ignored.

    Raises:
        ValueError: no finite value.
    """
    a = np.asarray(acc, dtype=float)
    ok = np.isfinite(a)
    if not ok.any():
        raise ValueError("no finite robust accuracy to pick a best epoch from")
    return int(np.flatnonzero(ok & (a == a[ok].max()))[-1])


@dataclasses.dataclass(frozen=True)
class BestEpoch:
    """The best and last epoch of one run, and where they come from.

    Attributes:
        epoch, acc_adv: best epoch and its robust accuracy (fraction).
        last_epoch, last_acc_adv: last epoch and its robust accuracy.
        source: :data:`SOURCE_LOG` or :data:`SOURCE_TABLE`.
        n_epochs: epochs on the curve the choice was made on.
    """

    epoch: int
    acc_adv: float
    last_epoch: int
    last_acc_adv: float
    source: str
    n_epochs: int


def _curve(table: pd.DataFrame, split: str, notes: list[str]) -> pd.DataFrame:
    """Per-epoch (sorted) ``epoch, acc_adv`` (+ ``n``) of ``split``, usable rows only."""
    _check_table(table)
    t = _usable_rows(table, notes)
    if split not in set(t["split"]):
        raise ValueError(f"no usable rows for split {split!r} (splits with results: "
                         f"{', '.join(sorted(set(t['split']))) or 'none'})")
    return _per_epoch(t, split, notes)


def best_epoch(table: pd.DataFrame, *, log: pd.DataFrame | None = None, split: str = "test") -> BestEpoch:
    """The one best epoch of a run (:data:`BEST_RULE`), from the training log when given, else ``table``.

    Args:
        table: trajectory table (or any table with ``epoch, split, acc_adv``); may be None when ``log`` is
            given.
        log: the training log (``metrics.csv``: ``epoch, split, acc_adv`` evaluated on the test set every
            epoch); preferred when it has usable ``split`` rows.
        split: the evaluation split. Default ``"test"``.

    Returns:
        :class:`BestEpoch`.

    Raises:
        ValueError / TypeError: neither table has usable rows for ``split``.
    """
    curve, source = None, SOURCE_TABLE
    if log is not None:
        try:
            curve, source = _curve(log, split, []), SOURCE_LOG
        except ValueError:
            curve = None
    if curve is None:
        if table is None:
            raise ValueError(f"the training log has no usable {split!r} rows and no table was given")
        curve, source = _curve(table, split, []), SOURCE_TABLE
    acc = curve["acc_adv"].to_numpy(dtype=float)
    i = best_index(acc)
    return BestEpoch(int(curve["epoch"].iloc[i]), float(acc[i]), int(curve["epoch"].iloc[-1]), float(acc[-1]),
                     source, len(curve))


def read_training_log(*places: str | os.PathLike | None, table: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """The training log (``metrics.csv``) of a run, or None: :func:`landscape.runs.find_training_log`."""
    return find_training_log(*places, table=table)


@dataclasses.dataclass
class Diagnosis:
    """Robust-overfitting summary of one run.

    Attributes:
        run: run name ("" when the table has no ``run`` column).
        split: evaluation split the RO fields refer to.
        n_epochs: number of distinct epochs with results.
        best_epoch, best_acc_adv: epoch and value of the best robust accuracy (fraction); None for one epoch.
        last_epoch, last_acc_adv: the last epoch and its robust accuracy (fraction).
        gap: best minus last robust accuracy in points; None for one epoch.
        onset_epoch: RO onset (see the module docstring); None when there is none.
        onset_threshold: points below the best that count as overfitting.
        train_test_gap_last: train minus test robust accuracy at the last epoch, in points (None without
            a train split).
        correlations: DataFrame ``measure, split, spearman, pearson, n`` (n = epochs used).
        measures: ``{split: {measure: mean}}`` at the last epoch.
        notes: caveats (left-out rows, too few epochs, constant series, ...).
        best_source: where the best/last epoch, gap and onset come from: the training log or the analysed
            subset (see the module docstring).
    """

    run: str
    split: str
    n_epochs: int
    best_epoch: int | None
    best_acc_adv: float | None
    last_epoch: int
    last_acc_adv: float
    gap: float | None
    onset_epoch: int | None
    onset_threshold: float | None
    train_test_gap_last: float | None
    correlations: pd.DataFrame
    measures: dict[str, dict[str, float]]
    notes: list[str]
    best_source: str = SOURCE_TABLE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN -> None, correlations as a list of records)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "correlations":
                value = [{k: _plain(v) for k, v in rec.items()} for rec in value.to_dict("records")]
            elif f.name == "measures":
                value = {s: {m: _plain(v) for m, v in d.items()} for s, d in value.items()}
            else:
                value = _plain(value)
            out[f.name] = value
        return out

    def summary(self) -> str:
        """Readable multi-line text: the notes first, then the fields (undefined correlations left out)."""
        name = f"run {self.run}" if self.run else "run"
        lines = [f"{name} ({self.split} split, {self.n_epochs} epoch{'s' if self.n_epochs != 1 else ''})"]
        lines += [f"  note: {note}" for note in self.notes]
        source = source_label(self.best_source)
        if self.best_epoch is not None:
            lines.append(f"  best robust accuracy    {100 * self.best_acc_adv:5.1f}% at epoch {self.best_epoch}"
                         f"  (from {source}; latest epoch on ties)")
            lines.append(f"  last robust accuracy    {100 * self.last_acc_adv:5.1f}% at epoch {self.last_epoch}"
                         f"  (best - last: {self.gap:.1f} points, from {source})")
            if self.onset_epoch is not None:
                lines.append(f"  robust overfitting      from epoch {self.onset_epoch} "
                             f"(>= {self.onset_threshold:.1f} points below the best to the end)")
            else:
                lines.append(f"  robust overfitting      none (never {self.onset_threshold:.1f} points below "
                             f"the best for the rest of training)")
        else:
            lines.append(f"  robust accuracy         {100 * self.last_acc_adv:5.1f}% at epoch {self.last_epoch}")
        if self.train_test_gap_last is not None:
            lines.append(f"  train - test robust acc {self.train_test_gap_last:5.1f} points at epoch {self.last_epoch}")
        if len(self.correlations):
            finite = np.isfinite(self.correlations[["spearman", "pearson"]].astype(float)).any(axis=1)
            defined, undefined = self.correlations[finite], int((~finite).sum())
            if len(defined):
                lines.append(f"  correlation with the {self.split} robust loss from epoch {self.best_epoch} on "
                             "(Spearman / Pearson, epochs):")
                for rec in defined.to_dict("records"):
                    lines.append(f"    {rec['measure'] + ' (' + rec['split'] + ')':<24} {_fmt(rec['spearman'])} / "
                                 f"{_fmt(rec['pearson'])}  (n={rec['n']})")
            if undefined:
                lines.append(f"  correlations            {undefined} undefined (see the note)")
        if any(self.measures.values()):
            lines.append(f"  measures at epoch {self.last_epoch} (mean):")
            for split, values in self.measures.items():
                shown = ", ".join(f"{m} {v:.4g}" for m, v in values.items())
                if shown:
                    lines.append(f"    {split}: {shown}")
        return "\n".join(lines)


def source_label(source: str) -> str:
    """A best epoch's source as ``diagnose``, ``plot curves`` and the report show it (``metrics.csv (...)``)."""
    return {SOURCE_LOG: f"{TRAINING_LOG} (training log)",
            SOURCE_TABLE: f"{run_file('trajectory')} (analysed subset)"}.get(source, str(source))

def _fmt(v: float) -> str:
    return "  nan" if v is None or not np.isfinite(v) else f"{v:+.2f}"


def _plain(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if v is pd.NA:
        return None
    return v


def _check_table(table: pd.DataFrame) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing} (needs {', '.join(_REQUIRED)}; "
                         f"has {', '.join(map(str, table.columns))})")
    acc = pd.to_numeric(table["acc_adv"], errors="coerce")
    finite = acc[np.isfinite(acc)]
    if len(finite) and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(f"acc_adv must be a fraction in [0, 1], got values from {finite.min():g} to "
                         f"{finite.max():g} (percent?)")


_STAT_SUFFIXES = ("_mean", "_median", "_q10", "_q90")


def _usable_rows(table: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    t = table
    if "error" in t.columns:
        bad = t["error"].notna()
        if bad.any():
            n_bad = t.loc[bad, "checkpoint"].nunique() if "checkpoint" in t.columns else int(bad.sum())
            notes.append(f"{n_bad} failed checkpoint(s) left out")
            t = t[~bad]
    epoch = pd.to_numeric(t["epoch"], errors="coerce")
    if epoch.isna().any():
        notes.append(f"{int(epoch.isna().sum())} row(s) without an epoch left out")
        t = t[epoch.notna()]
    t = t.copy()
    epoch = pd.to_numeric(t["epoch"])
    if (epoch != epoch.round()).any():
        raise ValueError(f"epoch must be whole numbers, got {epoch[epoch != epoch.round()].iloc[0]:g}")
    t["epoch"] = epoch.astype("int64")
    # numbers read from CSV as text ('abc', None) become NaN, so later steps see numeric columns only
    for c in t.columns:
        if c.startswith(("acc_", "loss_")) or c.endswith(_STAT_SUFFIXES):
            t[c] = pd.to_numeric(t[c], errors="coerce")
    acc = t["acc_adv"]
    if (~np.isfinite(acc)).any():
        notes.append(f"{int((~np.isfinite(acc)).sum())} row(s) without a robust accuracy left out")
        t = t[np.isfinite(acc)]
    return t


def _per_epoch(t: pd.DataFrame, split: str, notes: list[str]) -> pd.DataFrame:
    """One row per epoch for one split (duplicated epochs averaged), sorted by epoch."""
    part = t[t["split"] == split]
    numeric = [c for c in part.columns if c not in ("epoch", "split", "run", "checkpoint", "error")
               and pd.api.types.is_numeric_dtype(part[c])]
    counts = part.groupby("epoch").size()
    dup = counts[counts > 1]
    if len(dup):
        notes.append(f"{split}: duplicated epoch(s) {', '.join(map(str, dup.index.tolist()))} averaged")
    return part.groupby("epoch", sort=True)[numeric].mean().reset_index()


def default_threshold(best_acc: float, n: float | None) -> float:
    """Onset threshold in points: ``max(1, 2·100·sqrt(p(1−p)/n))`` (1 when n is unknown)."""
    if n is None or not np.isfinite(n) or n <= 0:
        return 1.0
    return max(1.0, 2 * 100 * math.sqrt(best_acc * (1 - best_acc) / n))


def onset_epoch(epochs: np.ndarray, acc: np.ndarray, best_index: int, threshold: float) -> int | None:
    """First epoch after ``best_index`` from which ``acc`` stays >= ``threshold`` points below the best.

    Args:
        epochs: (E,) sorted epochs.
        acc: (E,) robust accuracies (fractions).
        best_index: index of the best epoch.
        threshold: points.

    Returns:
        The onset epoch, or None.
    """
    below = (acc[best_index] - acc) * 100 >= threshold - 1e-9
    onset = None
    for i in range(len(epochs) - 1, best_index, -1):  # walk back from the end while still below
        if not below[i]:
            break
        onset = int(epochs[i])
    return onset


def _finite_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"correlation needs two sequences of the same length, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def _undefined(a: np.ndarray, b: np.ndarray) -> str | None:
    """Why a correlation of the finite pairs ``a, b`` is NaN, or None when it is defined."""
    if len(a) < MIN_EPOCHS_FOR_CORRELATION:
        return f"fewer than {MIN_EPOCHS_FOR_CORRELATION} epochs"
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return "constant series"
    return None


def spearman(x, y) -> float:
    """Spearman's rank correlation of two equal-length sequences (ties get average ranks), over the pairs
    where both values are finite; NaN with fewer than :data:`MIN_EPOCHS_FOR_CORRELATION` such pairs or a
    constant sequence.

    The one Spearman ρ of the package: the diagnosis' correlations, the study's ``rho_curv_share`` (the
    claims table) and the measure-vs-loss scatter all use it.
    """
    from scipy import stats

    a, b = _finite_pairs(x, y)
    if _undefined(a, b):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a, b).statistic)


def _correlate(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int, str | None]:
    """``(spearman, pearson, pairs used, why NaN or None)`` over the finite pairs."""
    from scipy import stats

    a, b = _finite_pairs(a, b)
    why = _undefined(a, b)
    if why:
        return float("nan"), float("nan"), len(a), why
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = float(stats.pearsonr(a, b).statistic)
    return spearman(a, b), r, len(a), None


def diagnose(table: pd.DataFrame, *, split: str = "test", threshold: float | None = None,
             log: pd.DataFrame | None = None) -> Diagnosis:
    """Diagnose robust overfitting in one run's trajectory table.

    Args:
        table: rows ``epoch, split, acc_adv`` (+ ``loss_adv``, ``n``, ``<m>_mean``, ``run``, ``error``);
            rows with an ``error`` or no epoch are left out (noted).
        split: evaluation split for the RO fields (``"test"``).
        threshold: onset threshold in points (default ``max(1, 2·SE)``, see the module docstring).
        log: the run's training log (``metrics.csv``, see :func:`read_training_log`); when it has usable
            ``split`` rows it is the source of the best/last epoch, gap and onset (``best_source``).

    Returns:
        :class:`Diagnosis`.

    Raises:
        TypeError: ``table`` is not a DataFrame.
        ValueError: missing columns, accuracies not in [0, 1], several runs (use :func:`diagnose_runs`),
            no usable row for ``split``, bad threshold.
    """
    _check_table(table)
    if threshold is not None and (not isinstance(threshold, (int, float)) or not threshold >= 0):
        raise ValueError(f"threshold must be a number of points >= 0, got {threshold!r}")
    runs = table["run"].dropna().unique().tolist() if "run" in table.columns else []
    if len(runs) > 1:
        raise ValueError(f"table holds {len(runs)} runs ({', '.join(map(str, runs[:5]))}); use diagnose_runs")
    notes: list[str] = []
    t = _usable_rows(table, notes)
    splits_present = sorted(set(t["split"]))
    if split not in splits_present:
        raise ValueError(f"no usable rows for split {split!r} (splits with results: "
                         f"{', '.join(splits_present) or 'none'})")
    ev = _per_epoch(t, split, notes)
    epochs = ev["epoch"].to_numpy()
    acc = ev["acc_adv"].to_numpy(dtype=float)
    last = len(ev) - 1
    other = "train" if split == "test" else "test"
    train = _per_epoch(t, other, []) if other in splits_present else None
    tt_gap = None
    if train is not None:
        row = train[train["epoch"] == epochs[last]]
        if len(row):
            g = float(row["acc_adv"].iloc[0]) - acc[last]
            tt_gap = 100 * g if other == "train" else -100 * g

    measure_cols = [c for c in t.columns if c.endswith("_mean")]
    measures: dict[str, dict[str, float]] = {}
    for s in splits_present:
        per = ev if s == split else _per_epoch(t, s, [])
        at_last = per[per["epoch"] == epochs[last]]
        if len(at_last):
            measures[s] = {c[: -len("_mean")]: float(at_last[c].iloc[0]) for c in measure_cols
                           if c in at_last.columns and np.isfinite(at_last[c].iloc[0])}

    run = str(runs[0]) if runs else ""
    empty = pd.DataFrame({"measure": pd.Series(dtype=object), "split": pd.Series(dtype=object),
                          "spearman": pd.Series(dtype=float), "pearson": pd.Series(dtype=float),
                          "n": pd.Series(dtype="int64")})
    curve, source = ev, SOURCE_TABLE
    if log is not None:
        try:
            curve, source = _curve(log, split, []), SOURCE_LOG
        except (ValueError, TypeError) as exc:
            notes.append(f"training log not used ({str(exc).splitlines()[0]}); best epoch from the analysed subset")
    c_epochs = curve["epoch"].to_numpy()
    c_acc = curve["acc_adv"].to_numpy(dtype=float)
    if len(curve) == 1:
        notes.append("one epoch only: no robust-overfitting fields")
        return Diagnosis(run, split, len(ev), None, None, int(c_epochs[0]), float(c_acc[0]), None, None, None,
                         tt_gap, empty, measures, notes, source)

    best = best_index(c_acc)  # the official rule: latest epoch on ties
    best_ep = int(c_epochs[best])
    n_best = float(curve["n"].iloc[best]) if "n" in curve.columns else None
    thr = float(threshold) if threshold is not None else default_threshold(float(c_acc[best]), n_best)
    onset = onset_epoch(c_epochs, c_acc, best, thr)
    if source == SOURCE_LOG and best_ep not in set(epochs.tolist()):
        notes.append(f"best epoch {best_ep} (training log) was not analysed; correlations use the analysed "
                     f"epochs from {best_ep} on")

    corr_rows = []
    if measure_cols and "loss_adv" in ev.columns:
        target = ev[ev["epoch"] >= best_ep][["epoch", "loss_adv"]]
        reasons: dict[str, list[str]] = {}
        for s in splits_present:
            per = ev if s == split else _per_epoch(t, s, [])
            merged = target.merge(per[["epoch", *[c for c in measure_cols if c in per.columns]]], on="epoch",
                                  how="inner", suffixes=("_target", ""))
            for c in measure_cols:
                if c not in merged.columns:
                    continue
                rho, r, k, why = _correlate(merged[c].to_numpy(dtype=float),
                                            merged["loss_adv"].to_numpy(dtype=float))
                corr_rows.append({"measure": c[: -len("_mean")], "split": s, "spearman": rho, "pearson": r,
                                  "n": k})
                if why:
                    reasons.setdefault(why, []).append(f"{c[: -len('_mean')]} ({s})")
        for why, which in sorted(reasons.items()):
            where = "all measures" if len(which) == len(corr_rows) else ", ".join(which)
            notes.append(f"correlations NaN ({why} from the best epoch on): {where}")
    elif measure_cols:
        notes.append("no loss_adv column: correlations skipped")
    correlations = pd.DataFrame(corr_rows) if corr_rows else empty
    if len(correlations):
        correlations["n"] = correlations["n"].astype("int64")
    return Diagnosis(run, split, len(ev), best_ep, float(c_acc[best]), int(c_epochs[-1]), float(c_acc[-1]),
                     100 * float(c_acc[best] - c_acc[-1]), onset, thr, tt_gap, correlations, measures, notes, source)


def diagnose_runs(table: pd.DataFrame, *, split: str = "test", threshold: float | None = None,
                  logs: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One diagnosis per run of a table with a ``run`` column (a table without one is a single run "").

    ``logs`` maps run names to their training logs (see :func:`diagnose`'s ``log``).

    Returns:
        One row per run (in order of appearance): ``run, n_epochs, best_epoch, best_acc_adv, last_epoch,
        last_acc_adv, gap, onset_epoch, onset_threshold, train_test_gap_last``, then
        ``<measure>_<split>_spearman`` and ``<measure>_<split>_pearson`` per correlation, and ``notes``
        (joined with "; ").
    """
    _check_table(table)
    if "run" in table.columns:
        groups = [(r, table[table["run"] == r]) for r in table["run"].dropna().unique().tolist()]
        if table["run"].isna().any():
            groups.append(("", table[table["run"].isna()].assign(run="")))
    else:
        groups = [("", table)]
    rows = []
    for run, part in groups:
        d = diagnose(part, split=split, threshold=threshold, log=(logs or {}).get(run))
        row: dict[str, Any] = {"run": run}
        for f in ("n_epochs", "best_epoch", "best_acc_adv", "last_epoch", "last_acc_adv", "gap", "onset_epoch",
                  "onset_threshold", "train_test_gap_last", "best_source"):
            row[f] = getattr(d, f)
        for rec in d.correlations.to_dict("records"):
            row[f"{rec['measure']}_{rec['split']}_spearman"] = rec["spearman"]
            row[f"{rec['measure']}_{rec['split']}_pearson"] = rec["pearson"]
        row["notes"] = "; ".join(d.notes)
        rows.append(row)
    out = pd.DataFrame(rows)
    for c in ("best_epoch", "onset_epoch"):
        out[c] = out[c].astype("Int64")
    return out


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a trajectory table: a ``.parquet`` or ``.csv`` file, or a run directory holding
    ``trajectory.parquet`` (else ``metrics.csv``), directly or in its ``analysis/`` folder (:meth:`Run.trajectory`).

    Raises:
        FileNotFoundError: nothing to read there.
        LandscapeError: the file cannot be read as a table.
    """
    if Path(path).is_dir():
        return Run(path).trajectory()
    table = load_tables([path], "trajectory")
    table.attrs["source"] = Path(path).name
    return table


def diagnosis_of(run: Run, *, split: str = "test", threshold: float | None = None) -> Diagnosis:
    """The run's diagnosis, always with its training log; computed once per (split, threshold) and cached on
    ``run`` (:attr:`Run.diagnosis_cache`). Raises as :func:`diagnose` does (e.g. a table of several runs)."""
    key = (split, threshold)
    if key not in run.diagnosis_cache:
        table = run.trajectory()
        log = table if table.attrs.get("source") == TRAINING_LOG else run.training_log(table)
        run.diagnosis_cache[key] = diagnose(table, split=split, threshold=threshold, log=log)
    return run.diagnosis_cache[key]


def best_last_epochs(trajectory: pd.DataFrame, *, logs: dict | None = None, split: str = "test") -> dict:
    """Per run ``{"best": epoch, "last": epoch}`` by :func:`diagnose` with the run's log from ``logs`` (run ->
    training log, see :func:`run_diagnoses`); runs it cannot diagnose are left out; no ``run`` column: ``""``."""
    return {run: {"best": int(d.best_epoch), "last": int(d.last_epoch)}
            for run, d in _diagnose_each(trajectory, logs or {}, split).items() if d.best_epoch is not None}


def _diagnose_each(trajectory: pd.DataFrame, logs: dict, split: str) -> dict[str, Diagnosis]:
    out = {}
    for run, part in trajectory.groupby("run", sort=False) if "run" in trajectory.columns else [("", trajectory)]:
        try:
            out[str(run)] = diagnose(part, split=split, log=logs.get(str(run)))
        except (LandscapeError, ValueError, TypeError):
            continue
    return out


def run_diagnoses(paths, *, split: str = "test") -> dict[str, Diagnosis]:
    """One diagnosis per run in ``paths`` (run folders or table files) with its training log, as the report and
    ``diagnosis.json`` make it (a folder's: :func:`diagnosis_of`); keyed as :func:`landscape.runs.load_tables`
    names runs (undiagnosable: left out)."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    out: dict[str, Diagnosis] = {}
    for p, name in zip(paths, run_names(paths)):
        run = Run(p) if p.is_dir() else None
        part = run.trajectory() if run is not None else load_tables([p], "trajectory")  # read once with the Run's
        part = _with_run(part, name) if len(paths) > 1 else part
        runs = part["run"].dropna().unique().tolist() if "run" in part.columns else [""]
        if len(runs) != 1:  # one table of several runs: no training log belongs to it
            out.update(_diagnose_each(part, {}, split))
            continue
        try:
            d = (diagnosis_of(run, split=split) if run is not None
                 else diagnose(part, split=split, log=read_training_log(p, table=part)))
        except (LandscapeError, ValueError, TypeError):
            continue
        out[str(runs[0])] = d if d.run == str(runs[0]) else dataclasses.replace(d, run=str(runs[0]))
    return out
