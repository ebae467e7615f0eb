"""From per-checkpoint outcomes to the run's tables: epochs, summaries, duplicates, best-model markers.

Epochs are reported as the training code numbered them (the stored ``epoch`` field, else the number in the
file name): Rice et al.'s ``model_0.pth`` is epoch 0, the AdvLC code's and ``landscape train``'s first
checkpoint is epoch 1. Nothing is renumbered, so a table's epochs match the trainer's log. Every row records the
wiring its checkpoint was loaded into (``arch``; one per run, see ``wiring``).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._base import LandscapeError
from .discover import Discovery, natural_key
from .settings import SPLITS, TrajectorySettings, TrajectoryWarning
from .wiring import checkpoint_wirings
from .worker import one_line

__all__ = ["assemble", "diagnosis_json", "match_markers", "summarise_samples", "summary_row"]

# per-sample columns that are not measures
_ID_COLUMNS = ("sample", "sample_id", "label", "epoch", "split", "checkpoint")
_BASE_COLUMNS = ("loss_clean", "loss_adv", "correct_clean", "correct_adv")


def _measure_columns(samples: pd.DataFrame) -> list[str]:
    return [c for c in samples.columns if c not in _ID_COLUMNS and c not in _BASE_COLUMNS
            and pd.api.types.is_numeric_dtype(samples[c]) and not pd.api.types.is_bool_dtype(samples[c])]


def _finite_stat(values: np.ndarray, fn) -> float:
    v = values[np.isfinite(values)]
    return float(fn(v)) if v.size else float("nan")


def summary_row(samples, measure_columns: Sequence[str]) -> dict[str, Any]:
    """One split's summary of its per-sample rows: ``samples`` is a DataFrame or a mapping of its columns to
    arrays (``correct_clean``, ``correct_adv``, ``loss_clean``, ``loss_adv`` and the measure columns; a missing
    measure column counts as NaN). Keys as in :func:`summarise_samples`, less ``split``."""
    n = len(samples["correct_clean"])
    row: dict[str, Any] = {"n": n,
                           "acc_clean": float(np.asarray(samples["correct_clean"], dtype=float).mean()),
                           "acc_adv": float(np.asarray(samples["correct_adv"], dtype=float).mean())}
    nonfinite = 0
    for c in ("loss_clean", "loss_adv"):
        v = np.asarray(samples[c], dtype=float)
        row[c] = _finite_stat(v, np.mean)
        nonfinite += int((~np.isfinite(v)).sum())
    for m in measure_columns:
        v = np.asarray(samples[m], dtype=float) if m in samples else np.full(n, np.nan)
        nonfinite += int((~np.isfinite(v)).sum())
        row[f"{m}_mean"] = _finite_stat(v, np.mean)
        row[f"{m}_median"] = _finite_stat(v, np.median)
        row[f"{m}_q10"] = _finite_stat(v, lambda a: np.quantile(a, 0.1))
        row[f"{m}_q90"] = _finite_stat(v, lambda a: np.quantile(a, 0.9))
    row["nonfinite"] = nonfinite
    return row


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
    splits = [s for s in SPLITS if s in set(samples["split"])] + sorted(set(samples["split"]) - set(SPLITS))
    return pd.DataFrame([{"split": split, **summary_row(samples[samples["split"] == split], cols)}
                         for split in splits])


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


def assemble(discovery: Discovery, outcomes: dict[str, dict[str, Any]], settings: TrajectorySettings,
             run: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(trajectory table, per-sample rows, report for ``attrs``) from each checkpoint's outcome
    (``{"samples", "stored_epoch", "error", "weights"}`` by entry key). ``settings.arch`` is the exact wiring the
    run was measured in (``wiring.resolve_run_wiring``): the ``arch`` column and the report's ``wiring``."""
    epochs, unknown = _resolve_epochs(discovery, outcomes)
    wirings = checkpoint_wirings(discovery, settings)
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
        head = {"run": run, "epoch": epochs[e.key], "checkpoint": str(e.path), "arch": wirings[str(e.path)]}
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
    columns = ["run", "epoch", "checkpoint", "split", "n", *stat_cols, "arch", "nonfinite", "error"]
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
        natural_key(Path(table["checkpoint"].iat[i]).name), split_rank.get(table["split"].iat[i], 99)))
    table = table.iloc[order].reset_index(drop=True)

    if sample_frames:
        samples = pd.concat(sample_frames, ignore_index=True)
        samples["epoch"] = samples["epoch"].astype("Int64" if samples["epoch"].isna().any() else "int64")
    else:
        samples = pd.DataFrame(columns=["epoch", "checkpoint", "split"])
    failed = sorted({str(e.path) for e in discovery.entries if outcomes[e.key]["error"] is not None})
    markers = match_markers(discovery, outcomes, epochs, settings.trusted)
    report = {"wiring": {"arch": settings.arch, "kwargs": dict(settings.arch_kwargs)},
              "markers": markers, "failed": len(failed), "failed_checkpoints": failed,
              "duplicates": {int(k): v for k, v in duplicates.items()}, "unparsed": discovery.unparsed,
              "no_epoch": unknown, "skipped": discovery.skipped, "optimizer_states": discovery.optimizer_states}
    return table, samples, report


def diagnosis_json(table: pd.DataFrame) -> dict[str, Any]:
    """``diagnose(table).to_dict()``, or ``{"error": ...}`` when the table cannot be diagnosed."""
    from ..diagnose import diagnose, read_training_log

    try:
        return diagnose(table, log=read_training_log(table=table)).to_dict()
    except (LandscapeError, ValueError) as exc:
        return {"error": one_line(exc)}


def match_markers(discovery: Discovery, outcomes: dict[str, dict[str, Any]], epochs: dict[str, int | None],
                  trusted: bool) -> list[dict[str, Any]]:
    """Which epoch each best-model copy (``model_best.pth``) holds, and one note saying so.

    The copy's epoch is its stored ``epoch`` field if it has one, else the epoch of the measured checkpoint
    whose loaded weights are identical (same :func:`~landscape.trajectory.worker.weights_digest`); None when
    no measured checkpoint matches (e.g. the trainer kept only every k-th epoch).

    Returns:
        One ``{"checkpoint", "kind", "epoch", "meta", "error"}`` per marker; ``meta`` holds the file's other
        scalar entries (Rice et al. store ``test_robust_acc`` etc.).
    """
    from ..checkpoints import load_checkpoint
    from .worker import weights_digest

    by_digest: dict[str, list[int]] = {}
    for e in discovery.entries:
        digest = outcomes[e.key].get("weights")
        if digest and epochs.get(e.key) is not None:
            by_digest.setdefault(digest, []).append(int(epochs[e.key]))
    found = []
    for path, kind in discovery.markers.items():
        rec: dict[str, Any] = {"checkpoint": path, "kind": kind, "epoch": None, "meta": {}, "error": None}
        try:
            ckpt = load_checkpoint(path, trusted=trusted)
            rec["meta"] = {k: v for k, v in ckpt.meta.items() if isinstance(v, (int, float, str, bool))}
            matches = by_digest.get(weights_digest(ckpt.state_dict), [])
            rec["epoch"] = int(ckpt.epoch) if ckpt.epoch is not None else (min(matches) if matches else None)
        except Exception as exc:  # noqa: BLE001 -- a bad marker is reported, never fatal
            rec["error"] = one_line(exc)
        found.append(rec)
    if found:
        text = "; ".join(f"{Path(r['checkpoint']).name} = epoch {r['epoch']}" if r["epoch"] is not None else
                         f"{Path(r['checkpoint']).name}: {r['error'] or 'matches no measured epoch'}"
                         for r in found)
        warnings.warn(f"best-model copies read as markers, not measured as epochs ({text})", TrajectoryWarning,
                      stacklevel=4)
    return found
