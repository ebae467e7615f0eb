"""Which training samples drive robust overfitting: per-sample landscape histories -> ranked sample ids.

``attribute(run_dir)`` reads a run's per-sample history table (:mod:`landscape.trajectory.histories`: one row
per training sample and analysed epoch, stable ``sample_id``) and scores every sample by how its adversarial
loss, curvature and correctness change after the run's best epoch (the official rule:
:func:`landscape.diagnose.diagnosis_of`). Scores (each: larger = more suspect; docs/attribution.md):

| score | definition |
|---|---|
| ``memorisation`` | ``loss_adv(best) − loss_adv(last)``: the robust-loss drop after the best epoch (AT fitting the sample late) |
| ``curvature_growth`` | ``curv_adv(last) − curv_adv(best)``: growth of the curvature along the adversarial direction after the best epoch |
| ``learning_epoch`` | the first analysed epoch from which ``x_adv`` stays correctly classified up to the last epoch; NaN when the sample is misclassified at the last epoch (never learned, or learned then forgotten) |
| ``combined`` | the mean of the three per-score ranks (rank 1 = most suspect; ties share their mean rank) |

Per-score ranks: ``memorisation`` and ``curvature_growth`` descending (a NaN, e.g. no ``curv_adv`` column, ranks
last); ``learning_epoch`` descending with never-learned samples (NaN) *first*: "never" is later than any
epoch, and a label that adversarial training still cannot fit at its last epoch contradicts its neighbourhood.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ._base import LandscapeError

__all__ = ["SCORES", "attribute", "best_epoch_of", "learning_epochs", "rank_scores", "score_samples",
           "top_precision"]

#: the attribution scores, in column order; ``combined`` is the default ranking
SCORES = ("memorisation", "curvature_growth", "learning_epoch", "combined")
_NEEDED = ("sample_id", "epoch", "label", "loss_adv", "correct_adv")


def _check_history(h: pd.DataFrame, columns: Sequence[str] = _NEEDED) -> pd.DataFrame:
    if not isinstance(h, pd.DataFrame):
        raise TypeError(f"a history table must be a DataFrame, got {type(h).__name__}")
    missing = [c for c in columns if c not in h.columns]
    if missing:
        raise ValueError(f"the history table lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, h.columns))})")
    if h.empty:
        raise ValueError("the history table is empty")
    if h.duplicated(["sample_id", "epoch"]).any():
        raise ValueError("the history table has several rows per (sample_id, epoch): pass one split")
    return h


def learning_epochs(history: pd.DataFrame) -> pd.Series:
    """Per ``sample_id``: the first epoch from which ``correct_adv`` holds at every later analysed epoch.

    Args:
        history: long table with ``sample_id, epoch, correct_adv`` (one split).

    Returns:
        float Series indexed by ``sample_id``: that epoch, NaN when ``x_adv`` is misclassified at the last
        epoch (never learned, or learned and then forgotten). A sample correct from its first epoch on gets its
        first epoch.
    """
    h = _check_history(history, ("sample_id", "epoch", "correct_adv"))
    wide = h.pivot(index="sample_id", columns="epoch", values="correct_adv").sort_index(axis=1)
    epochs = wide.columns.to_numpy(dtype=float)
    ok = wide.fillna(False).to_numpy(dtype=bool)
    # stays[i, j]: correct at every epoch from j to the last (a reversed cumulative AND)
    stays = np.flip(np.logical_and.accumulate(np.flip(ok, 1), axis=1), 1)
    first = np.argmax(stays, axis=1)
    out = np.where(stays[:, -1], epochs[first], np.nan)
    return pd.Series(out, index=wide.index, name="learning_epoch")


def score_samples(history: pd.DataFrame, best_epoch: int, *, last_epoch: int | None = None) -> pd.DataFrame:
    """The raw scores of every sample (no ranking), one row per ``sample_id``.

    Args:
        history: long table with ``sample_id, epoch, label, loss_adv, correct_adv`` and, for
            ``curvature_growth``, ``curv_adv`` (NaN scores without it); one split.
        best_epoch: the run's best epoch; it must be an analysed epoch of ``history``.
        last_epoch: default the last epoch of ``history``.

    Returns:
        ``sample_id, label, memorisation, curvature_growth, learning_epoch, loss_adv_best, loss_adv_last,
        correct_adv_last`` (+ ``margin_adv_last`` when the history has margins), sorted by ``sample_id``.

    Raises:
        ValueError: missing columns, or ``best_epoch``/``last_epoch`` not in the history.
    """
    h = _check_history(history)
    epochs = sorted(int(e) for e in h["epoch"].unique())
    last = epochs[-1] if last_epoch is None else int(last_epoch)
    for name, e in (("best_epoch", best_epoch), ("last_epoch", last)):
        if int(e) not in epochs:
            raise ValueError(f"{name} {e} is not an analysed epoch of the history (epochs: {epochs[0]}..{epochs[-1]}, "
                             f"{len(epochs)} in all)")
    best = int(best_epoch)
    h = h[h["epoch"] <= last]
    loss = h.pivot(index="sample_id", columns="epoch", values="loss_adv").astype(float)
    out = pd.DataFrame(index=loss.index)
    out["label"] = h.groupby("sample_id")["label"].last().astype(np.int64)
    out["memorisation"] = loss[best] - loss[last]
    if "curv_adv" in h.columns:
        curv = h.pivot(index="sample_id", columns="epoch", values="curv_adv").astype(float)
        out["curvature_growth"] = curv[last] - curv[best]  # same epochs as loss: both checked above
    else:
        out["curvature_growth"] = np.nan
    out["learning_epoch"] = learning_epochs(h)
    out["loss_adv_best"] = loss[best]
    out["loss_adv_last"] = loss[last]
    at_last = h[h["epoch"] == last].set_index("sample_id")
    out["correct_adv_last"] = at_last["correct_adv"].astype(bool)
    if "margin_adv" in h.columns:
        out["margin_adv_last"] = at_last["margin_adv"].astype(float)
    out.index.name = "sample_id"
    return out.reset_index()


def _rank(values: pd.Series, *, nan_first: bool = False) -> pd.Series:
    """Rank 1 = largest value; ties share their mean rank; NaN ranks after every number (before them with
    ``nan_first``), NaNs tied among themselves."""
    r = values.rank(ascending=False, method="average", na_option="top" if nan_first else "bottom")
    return r.astype(float)


def rank_scores(scores: pd.DataFrame, *, by: str = "combined") -> pd.DataFrame:
    """Add ``rank_<score>`` per score and ``combined`` (mean of the three ranks; smaller = more suspect) and
    sort by ``by`` (``combined``: ascending mean rank; a raw score: its rank), ``rank`` = 1, 2, ...

    Raises:
        ValueError: ``by`` not one of :data:`SCORES`.
    """
    if by not in SCORES:
        raise ValueError(f"by must be one of {', '.join(SCORES)}, got {by!r}")
    t = scores.copy()
    for s in SCORES[:3]:
        t[f"rank_{s}"] = _rank(t[s], nan_first=(s == "learning_epoch"))
    t["combined"] = t[[f"rank_{s}" for s in SCORES[:3]]].mean(axis=1)
    key = "combined" if by == "combined" else f"rank_{by}"
    t = t.sort_values([key, "sample_id"], kind="stable").reset_index(drop=True)
    t.insert(0, "rank", np.arange(1, len(t) + 1, dtype=np.int64))
    return t


def best_epoch_of(run_dir: str | os.PathLike) -> int:
    """The run's best epoch by the official rule (``diagnosis_of(Run(run_dir))``, training log preferred)."""
    from .diagnose import diagnosis_of
    from .runs import Run

    d = diagnosis_of(Run(run_dir))
    if d.best_epoch is None:
        raise LandscapeError(f"{run_dir}: no best epoch could be diagnosed (no test robust accuracy?)")
    return int(d.best_epoch)


def _nearest(epochs: Sequence[int], epoch: int) -> int:
    """The analysed epoch closest to ``epoch`` (the earlier on ties)."""
    return min(epochs, key=lambda e: (abs(e - epoch), e))


def attribute(source: str | os.PathLike | pd.DataFrame, *, best_epoch: int | None = None, top: int | None = None,
              by: str = "combined", split: str = "train") -> pd.DataFrame:
    """Rank the training samples of a run by how strongly they drive robust overfitting.

    Args:
        source: a run folder written by ``landscape trajectory`` (its ``histories.parquet``, built from the
            per-checkpoint results when missing), a history file (``.parquet``/``.csv``), or a history
            DataFrame (see :mod:`landscape.trajectory.histories` for the columns).
        best_epoch: the best epoch; default (run folder only) the official rule's
            (:func:`landscape.diagnose.diagnosis_of`). When that epoch was not analysed, the closest analysed
            one is used (``attrs["best_epoch_used"]``).
        top: keep the ``top`` first rows (None: all samples).
        by: the ranking, one of :data:`SCORES`. Default ``"combined"``.
        split: the split whose samples are ranked. Default ``"train"``.

    Returns:
        One row per sample, best-ranked first: ``rank, sample_id, label, memorisation, curvature_growth,
        learning_epoch, loss_adv_best, loss_adv_last, correct_adv_last, [margin_adv_last],
        rank_memorisation, rank_curvature_growth, rank_learning_epoch, combined``. ``attrs``: ``best_epoch``,
        ``best_epoch_used``, ``last_epoch``, ``epochs`` (analysed), ``by``, ``split``, ``n_samples``.

    Raises:
        ValueError / TypeError: bad arguments (named with the allowed values). LandscapeError: no histories.

    Example:
        >>> ranked = attribute("runs/demo/pgd_at/s0/attribution", top=60)
        >>> ranked[["rank", "sample_id", "combined"]].head()
    """
    from .trajectory.histories import read_histories

    if by not in SCORES:
        raise ValueError(f"by must be one of {', '.join(SCORES)}, got {by!r}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1):
        raise ValueError(f"top must be an integer >= 1, got {top!r}")
    if isinstance(source, pd.DataFrame):
        history = read_histories(source, splits=[split])
        if best_epoch is None:
            raise ValueError("best_epoch is required when a history table is given (a run folder has its own)")
    else:
        path = Path(source)
        if not path.exists():
            raise LandscapeError(f"no such run folder or history file: {path}")
        history = read_histories(path, splits=[split])
        if best_epoch is None:
            if not path.is_dir():
                raise ValueError("best_epoch is required when a history file is given (a run folder has its own)")
            best_epoch = best_epoch_of(path)
    if history.empty:
        raise LandscapeError(f"the history has no {split!r} rows")
    epochs = sorted(int(e) for e in history["epoch"].unique())
    used = _nearest(epochs, int(best_epoch))
    ranked = rank_scores(score_samples(history, used), by=by)
    if top is not None:
        ranked = ranked.head(int(top)).reset_index(drop=True)
    ranked.attrs.update(best_epoch=int(best_epoch), best_epoch_used=used, last_epoch=epochs[-1], epochs=epochs,
                        by=by, split=split, n_samples=int(history["sample_id"].nunique()))
    return ranked


def top_precision(ranked: pd.DataFrame, positives: Sequence[int], k: int | None = None) -> dict[str, float]:
    """Precision and recall of ``positives`` (e.g. the flipped-label ids) among the ``k`` first rows of
    ``ranked`` (default ``k = len(positives)``, where precision equals recall).

    Returns:
        ``{"k", "hits", "precision", "recall", "chance"}``; ``chance`` = positives / samples ranked.
    """
    pos = {int(p) for p in positives}
    if not pos:
        raise ValueError("positives is empty: precision and recall are undefined")
    k = len(pos) if k is None else int(k)
    if not 1 <= k <= len(ranked):
        raise ValueError(f"k must be between 1 and {len(ranked)}, got {k}")
    hits = int(ranked["sample_id"].head(k).astype(int).isin(pos).sum())
    return {"k": k, "hits": hits, "precision": hits / k, "recall": hits / len(pos), "chance": len(pos) / len(ranked)}
