"""A study's findings from what its runs wrote: one row per run, mean ± sd per variant, and their Markdown.

A study keeps run (variant, seed) in ``<out>/<variant>/s<seed>`` (:func:`run_dir`): the training log
``metrics.csv`` and the trajectory analysis ``analysis/trajectory.parquet``. :func:`run_summary` reads one run,
:func:`findings_table` every run of a study (the rows :func:`landscape.study.claims.claims_table` tests), and
:func:`findings_markdown` renders the per-variant summary (``findings.md``, the README blocks).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..diagnose import best_epoch, spearman
from ..runs import run_file
from ._format import pm

__all__ = ["FINDING_MEASURES", "run_dir", "log_best_epoch", "epoch_first_order_share", "run_summary",
           "findings_table", "findings_markdown"]

#: trajectory columns reported at the best and the last epoch.
FINDING_MEASURES = {"grad_l1_mean": "grad_l1", "curv_adv_mean": "curv_adv", "w_flat_avg_mean": "w_flat_avg",
                    "w_awp_gap_mean": "w_awp_gap"}
#: their findings-table headers; the weight-space ones (``w_*``) are shown only when a study measured them.
_FINDING_LABELS = {"grad_l1": "grad ‖∇ₓL‖₁", "curv_adv": "curv_adv", "w_flat_avg": "w_flat_avg (weights)",
                   "w_awp_gap": "w_awp_gap (weights)"}


def run_dir(out: Path, variant: str, seed: int) -> Path:
    """Folder of run (``variant``, ``seed``) in the study folder ``out``."""
    return Path(out) / variant / f"s{seed}"


def log_best_epoch(metrics: pd.DataFrame) -> int:
    """Best epoch of a training log (``metrics.csv``) by the official rule (highest test PGD accuracy, latest
    on ties): :func:`landscape.diagnose.best_epoch` on the log — the same epoch whose checkpoint training keeps."""
    return int(best_epoch(None, log=metrics).epoch)


def epoch_first_order_share(traj: pd.DataFrame, eps: float) -> pd.Series:
    """Per-epoch first-order share of the adversarial loss increase, ``eps·‖∇ₓL‖₁ / (L(x_adv) − L(x))``, from
    a run's trajectory table (one row per epoch).

    Uses the median of the per-sample ``fo_share`` measure (:mod:`landscape.measures.first_order`, NaN where
    the loss barely rises) when the trajectory has it; otherwise the ratio of the split means
    ``eps · grad_l1_mean / (loss_adv − loss_clean)`` (NaN where the increase is not positive), which needs
    only the ``grad`` measure. (:func:`landscape.measures.first_order_share` is the per-sample measure.)
    """
    if "fo_share_median" in traj.columns:
        return traj["fo_share_median"].astype(float)
    rise = (traj["loss_adv"] - traj["loss_clean"]).astype(float)
    return (eps * traj["grad_l1_mean"] / rise.where(rise > 0)).astype(float)


def run_summary(folder: Path, eps: float | None = None) -> dict:
    """One run's best/last test PGD accuracy (in %, from every epoch of ``metrics.csv``; best by the
    official rule), the same at the small eps when evaluated, its test measures at the best and the last
    epoch, and the Spearman ρ (:func:`landscape.diagnose.spearman`) between curvature and the first-order
    share from the best epoch on (from ``analysis/trajectory.parquet``)."""
    metrics = pd.read_csv(folder / run_file("metrics"))
    test = metrics[metrics["split"] == "test"].sort_values("epoch")
    best = log_best_epoch(metrics)
    last = int(test["epoch"].iloc[-1])
    row = dict(best_epoch=best, best=100 * float(test["acc_adv"].max()),
               last=100 * float(test["acc_adv"].iloc[-1]))
    row["gap"] = row["best"] - row["last"]
    row["clean_last"] = 100 * float(test["acc_clean"].iloc[-1])
    if "acc_adv_small" in test.columns:
        row["best_small"] = 100 * float(test["acc_adv_small"].max())
        row["last_small"] = 100 * float(test["acc_adv_small"].iloc[-1])
        row["gap_small"] = row["best_small"] - row["last_small"]
    traj_path = folder / "analysis" / run_file("trajectory")
    if traj_path.is_file():
        traj = pd.read_parquet(traj_path)
        traj = traj[(traj["split"] == "test") & traj["error"].isna()].set_index("epoch").sort_index()
        for column, name in FINDING_MEASURES.items():
            if column in traj.columns:
                for tag, epoch in (("best", best), ("last", last)):
                    row[f"{name}_{tag}"] = float(traj[column].get(epoch, np.nan))
                row[f"{name}_rise"] = row[f"{name}_last"] - row[f"{name}_best"]
        if eps is not None and {"curv_adv_mean", "grad_l1_mean"} <= set(traj.columns):
            after = traj[traj.index >= best]
            row["rho_curv_share"] = spearman(after["curv_adv_mean"], epoch_first_order_share(after, eps))
    return row


def findings_table(out: Path, variants, seeds, eps: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-run rows, per-variant mean/sd) over the seeds."""
    rows = [dict(variant=v, seed=s, **run_summary(run_dir(out, v, s), eps)) for v in variants for s in seeds]
    runs = pd.DataFrame(rows)
    values = [c for c in runs.columns if c not in ("variant", "seed")]
    agg = runs.groupby("variant", sort=False)[values].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg.insert(0, "seeds", runs.groupby("variant", sort=False).size())
    return runs, agg.reset_index()


def findings_markdown(agg: pd.DataFrame) -> str:
    """Markdown table of :func:`findings_table`'s per-variant summary (mean ± sd over seeds)."""
    shown = [n for n in FINDING_MEASURES.values() if not n.startswith("w_") or f"{n}_best_mean" in agg.columns]
    head = ["variant", "seeds", "best PGD acc (%)", "best epoch", "last PGD acc (%)", "best − last (points)",
            "best − last at small eps", "last clean acc (%)", *[f"{_FINDING_LABELS[n]} best → last" for n in shown]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in agg.to_dict("records"):
        cells = [r["variant"], str(r["seeds"]), pm(r["best_mean"], r["best_std"], 1),
                 pm(r["best_epoch_mean"], r["best_epoch_std"], 0), pm(r["last_mean"], r["last_std"], 1),
                 pm(r["gap_mean"], r["gap_std"], 1),
                 pm(r.get("gap_small_mean", math.nan), r.get("gap_small_std", math.nan), 1),
                 pm(r["clean_last_mean"], r["clean_last_std"], 1)]
        for name in shown:
            if f"{name}_best_mean" in r:
                cells.append(f"{pm(r[f'{name}_best_mean'], r[f'{name}_best_std'], 3)} → "
                             f"{pm(r[f'{name}_last_mean'], r[f'{name}_last_std'], 3)}")
            else:
                cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
