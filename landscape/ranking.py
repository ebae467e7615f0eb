"""Which measure tracks robust overfitting: every input- and weight-space measure ranked across runs.

For each run, :func:`landscape.diagnose.diagnose` correlates each measure's per-epoch mean with the test robust
loss over the epochs from the best one on (Spearman ρ, the run's ``correlations``). A measure *tracks* robust
overfitting when that ρ is far from 0 in the same direction on every run: a rising curvature (ρ > 0) or a
falling first-order share (ρ < 0) both follow the test robust loss. :func:`rank_measures` gathers those ρ over
runs and orders the measures by ``|mean ρ|``, with the spread over runs (seeds) beside it.

Not ranked: the companion columns of a measure (its standard error ``*_se``, Lanczos residual ``*_res``) and
``w_awp``, the robust loss itself at the AWP-perturbed weights, which follows the robust loss by construction
(its increase, ``w_awp_gap``, is the sharpness that is ranked).

Only runs that robust-overfit carry the signal: after the best epoch of a run that does not, the test robust
loss is flat and ρ is noise. The default keeps the runs with an onset (``onset_epoch`` set); pass
``overfitting_only=False`` to keep every run.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import pandas as pd

__all__ = ["RANK_COLUMNS", "WEIGHT_PREFIX", "ranked", "space_of", "rank_measures"]

#: columns of :func:`rank_measures`' table.
RANK_COLUMNS = ["rank", "measure", "space", "split", "runs", "spearman_mean", "spearman_sd", "spearman_min",
                "spearman_max", "same_sign"]
#: weight-space measures are named ``w_*`` (:mod:`landscape.measures.weight_space`).
WEIGHT_PREFIX = "w_"
#: columns left out of the ranking (see the module docstring): suffixes, and whole names.
UNRANKED_SUFFIXES = ("_se", "_res")
UNRANKED = ("w_awp",)


def ranked(measure: str) -> bool:
    """Whether ``measure`` (a column stem) is ranked: not a companion column, not a loss level."""
    return not str(measure).endswith(UNRANKED_SUFFIXES) and str(measure) not in UNRANKED


def space_of(measure: str) -> str:
    """``"weight"`` for a weight-space measure (``w_*``), else ``"input"``."""
    return "weight" if str(measure).startswith(WEIGHT_PREFIX) else "input"


def _as_dict(d: Any) -> dict[str, Any]:
    return d.to_dict() if dataclasses.is_dataclass(d) else dict(d)


def rank_measures(diagnoses: Mapping[str, Any], *, overfitting_only: bool = True,
                  split: str | None = None) -> pd.DataFrame:
    """Rank the measures by how well they track the test robust loss after the best epoch, across runs.

    Args:
        diagnoses: ``{run: Diagnosis}`` (or its ``to_dict()``, as the report holds them).
        overfitting_only: keep only the runs with a robust-overfitting onset (see the module docstring).
        split: keep only measures computed on this split (``"test"``/``"train"``); None keeps both.

    Returns:
        One row per (measure, split) with a defined ρ on at least one run, columns :data:`RANK_COLUMNS`:
        ``runs`` (how many runs gave a finite ρ), ``spearman_mean``/``_sd``/``_min``/``_max`` over those runs
        (sd NaN for one run), ``same_sign`` (the fraction of runs whose ρ has the sign of the mean), ``space``
        (``input``/``weight``) and ``rank`` (1 = largest ``|spearman_mean|``; ties share the better rank).
        Empty (with those columns) when no run qualifies.
    """
    if not isinstance(diagnoses, Mapping):
        raise TypeError(f"diagnoses must be a mapping of run -> Diagnosis, got {type(diagnoses).__name__}")
    values: dict[tuple[str, str], list[float]] = {}
    for d in map(_as_dict, diagnoses.values()):
        if "error" in d or (overfitting_only and d.get("onset_epoch") is None):
            continue
        for rec in d.get("correlations") or []:
            rho = rec.get("spearman")
            if (split is not None and rec.get("split") != split) or not ranked(str(rec["measure"])):
                continue
            if rho is not None and np.isfinite(float(rho)):
                values.setdefault((str(rec["measure"]), str(rec["split"])), []).append(float(rho))
    rows = []
    for (measure, sp), rhos in values.items():
        a = np.asarray(rhos)
        mean = float(a.mean())
        rows.append({"measure": measure, "space": space_of(measure), "split": sp, "runs": len(a),
                     "spearman_mean": mean, "spearman_sd": float(a.std(ddof=1)) if len(a) > 1 else float("nan"),
                     "spearman_min": float(a.min()), "spearman_max": float(a.max()),
                     "same_sign": float(np.mean(np.sign(a) == np.sign(mean))) if mean != 0 else float("nan")})
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("measure", "space", "split") else float)
                             for c in RANK_COLUMNS})
    out = pd.DataFrame(rows)
    out["rank"] = out["spearman_mean"].abs().rank(ascending=False, method="min").astype("int64")
    return out.sort_values(["rank", "measure", "split"], kind="stable")[RANK_COLUMNS].reset_index(drop=True)
