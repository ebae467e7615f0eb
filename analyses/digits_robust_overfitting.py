"""Robust overfitting on the bundled 8x8 digits, and what the input loss landscape shows about it.

Pipeline (``make demo`` runs ``python analyses/digits_robust_overfitting.py --out runs/demo``):

1. **train** ``standard``, ``pgd_at``, ``at_advlc`` and ``at_gradreg`` for each seed
   (:func:`landscape.training.train`; one checkpoint per epoch; resumable);
2. **trajectory**: measure the input loss landscape (input-gradient norms, adversarial-direction curvature,
   Taylor gap, logit variation) at every k-th checkpoint plus the best and the last epoch
   (:func:`landscape.trajectory.analyse_trajectory`, into ``<run>/analysis``);
3. **findings**: per method, mean ± sd over seeds of the best and last test PGD accuracy, their gap, and the
   test gradient norm and curvature at the best vs the last epoch (``findings.csv``, ``findings.md``);
4. **report**: figures and the diagnosis of every run in ``<out>/report.html``
   (:func:`landscape.report.build_report`).

Setting (default): MLP 64-256-256-10 (ReLU), 300-sample stratified training subset with 20 % symmetric label
noise, eps = 0.1 (L∞), PGD-7 (step 2.5·eps/7, random start) for training and PGD-10 for evaluation on the
whole digits test split, SGD lr 0.1 momentum 0.9 weight decay 5e-4, ×0.1 after 50 % and 75 % of 150 epochs,
batch 64. Label noise is what makes robust overfitting appear at this scale: on clean digits none of these
settings robust-overfit (``--clean`` runs that variant).

Every stage skips work already on disk, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

METHODS = ("standard", "pgd_at", "at_advlc", "at_gradreg")
#: landscape measures computed along each trajectory.
MEASURES = ("grad", "curv_adv", "taylor_gap", "logit_var")
#: trajectory columns reported at the best and the last epoch.
FINDING_MEASURES = {"grad_l1_mean": "grad_l1", "curv_adv_mean": "curv_adv"}


def study_config(args: argparse.Namespace) -> dict:
    """Hyper-parameters of every run (the same for each method and seed)."""
    quick = args.quick
    return dict(
        epochs=args.epochs or (6 if quick else 150),
        train_n=60 if quick else 300,
        label_noise=0.0 if args.clean else 0.2,
        eps=0.1, steps=2 if quick else 7, eval_steps=2 if quick else 10, eval_n=60 if quick else None,
        lr=0.1, lr_milestones=(0.5, 0.75), momentum=0.9, weight_decay=5e-4, batch_size=32 if quick else 64,
        hidden=(32,) if quick else (256, 256),
        analysis_n=20 if quick else 300, analysis_steps=2 if quick else 10,
        every=args.every or (3 if quick else 10),
        measures=["grad", "curv_adv"] if quick else list(MEASURES),
    )


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / method / f"s{seed}"


# ------------------------------------------------------------------------------------------------- train
def train_one(out: Path, method: str, seed: int, cfg: dict, *, progress: bool) -> Path:
    """Train (or finish training) one method/seed into ``out/<method>/s<seed>``."""
    from landscape.data import load_dataset
    from landscape.training import seeded_model, train

    arch_kwargs = dict(hidden=tuple(cfg["hidden"]))
    data = (load_dataset("digits", "train", n=cfg["train_n"], seed=seed), load_dataset("digits", "test"))
    folder = run_dir(out, method, seed)
    train(seeded_model("mlp", seed, **arch_kwargs), data, method=method, eps=cfg["eps"], steps=cfg["steps"],
          epochs=cfg["epochs"], lr=cfg["lr"], lr_milestones=cfg["lr_milestones"], momentum=cfg["momentum"],
          weight_decay=cfg["weight_decay"], batch_size=cfg["batch_size"], label_noise=cfg["label_noise"],
          seed=seed, eval_n=cfg["eval_n"], eval_steps=cfg["eval_steps"], out_dir=folder, arch="mlp",
          arch_kwargs=arch_kwargs, dataset="digits", progress=progress)
    return folder


# -------------------------------------------------------------------------------------------- trajectory
def best_epoch(metrics: pd.DataFrame) -> int:
    """Epoch of the highest test PGD accuracy in ``metrics.csv`` (earliest on ties)."""
    test = metrics[metrics["split"] == "test"]
    return int(test.loc[test["acc_adv"].idxmax(), "epoch"])


def epochs_to_analyse(epochs: int, every: int, best: int) -> list[int]:
    """Every ``every``-th epoch, the first, the best and the last (sorted, unique)."""
    return sorted({1, best, epochs, *range(every, epochs + 1, every)})


def analyse_one(folder: Path, seed: int, cfg: dict, *, progress: bool) -> pd.DataFrame:
    """Trajectory analysis of the selected checkpoints of one run into ``folder/analysis``."""
    from landscape.training import checkpoint_path
    from landscape.trajectory import analyse_trajectory

    metrics = pd.read_csv(folder / "metrics.csv")
    chosen = epochs_to_analyse(cfg["epochs"], cfg["every"], best_epoch(metrics))
    return analyse_trajectory(
        [checkpoint_path(folder, e) for e in chosen], "mlp", "digits", out_dir=folder / "analysis",
        arch_kwargs=dict(hidden=tuple(cfg["hidden"])), measures=cfg["measures"], n=cfg["analysis_n"],
        eps=cfg["eps"], steps=cfg["analysis_steps"], seed=seed, run=f"{folder.parent.name}/{folder.name}",
        progress=progress)


# ---------------------------------------------------------------------------------------------- findings
def run_summary(folder: Path) -> dict:
    """One run's best/last test PGD accuracy (in %, from every epoch of ``metrics.csv``) and its test
    measures at the best and the last epoch (from ``analysis/trajectory.parquet``)."""
    metrics = pd.read_csv(folder / "metrics.csv")
    test = metrics[metrics["split"] == "test"].sort_values("epoch")
    best = best_epoch(metrics)
    last = int(test["epoch"].iloc[-1])
    row = dict(best_epoch=best, best=100 * float(test["acc_adv"].max()),
               last=100 * float(test["acc_adv"].iloc[-1]))
    row["gap"] = row["best"] - row["last"]
    traj_path = folder / "analysis" / "trajectory.parquet"
    if traj_path.is_file():
        traj = pd.read_parquet(traj_path)
        traj = traj[(traj["split"] == "test") & traj["error"].isna()].set_index("epoch")
        for column, name in FINDING_MEASURES.items():
            if column in traj.columns:
                for tag, epoch in (("best", best), ("last", last)):
                    row[f"{name}_{tag}"] = float(traj[column].get(epoch, np.nan))
    return row


def findings_table(out: Path, methods, seeds) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-run rows, per-method mean/sd) over the seeds."""
    rows = [dict(method=m, seed=s, **run_summary(run_dir(out, m, s))) for m in methods for s in seeds]
    runs = pd.DataFrame(rows)
    values = [c for c in runs.columns if c not in ("method", "seed", "best_epoch")]
    agg = runs.groupby("method", sort=False)[values].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg.insert(0, "seeds", runs.groupby("method", sort=False).size())
    return runs, agg.reset_index()


def _pm(mean: float, sd: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def findings_markdown(agg: pd.DataFrame) -> str:
    """Markdown table of :func:`findings_table`'s per-method summary (mean ± sd over seeds)."""
    head = ["method", "seeds", "best PGD acc (%)", "last PGD acc (%)", "best − last (points)",
            "grad ‖∇ₓL‖₁ best → last", "curv_adv best → last"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in agg.to_dict("records"):
        cells = [r["method"], str(r["seeds"]), _pm(r["best_mean"], r["best_std"], 1),
                 _pm(r["last_mean"], r["last_std"], 1), _pm(r["gap_mean"], r["gap_std"], 1)]
        for name in FINDING_MEASURES.values():
            if f"{name}_best_mean" in r:
                cells.append(f"{_pm(r[f'{name}_best_mean'], r[f'{name}_best_std'], 3)} → "
                             f"{_pm(r[f'{name}_last_mean'], r[f'{name}_last_std'], 3)}")
            else:
                cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                   help="seeds to run (default: 0); the findings table needs >= 3, e.g. --seeds 0 1 2")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 150; 6 with --quick)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"methods to train (default: all of {', '.join(METHODS)})")
    p.add_argument("--every", type=int, default=None,
                   help="analyse every k-th checkpoint, plus the first, best and last (default 10)")
    p.add_argument("--clean", action="store_true", help="no label noise (clean digits do not robust-overfit)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (seconds)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the models are tiny)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.every is not None and args.every < 1:
        p.error(f"--every must be >= 1, got {args.every}")
    return args


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    cfg = study_config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    torch.set_num_threads(args.threads)  # tiny models: more threads only add contention
    t0 = time.perf_counter()
    runs = [(m, s) for s in args.seeds for m in args.methods]
    log = print if progress else (lambda *a, **k: None)
    log(f"digits robust overfitting: {len(runs)} run(s) of {cfg['epochs']} epochs -> {out}")
    for m, s in runs:
        train_one(out, m, s, cfg, progress=progress)
    t_train = time.perf_counter() - t0
    log(f"  trained in {t_train:.0f} s; analysing every {cfg['every']}th checkpoint + best + last")
    for m, s in runs:
        analyse_one(run_dir(out, m, s), s, cfg, progress=progress)
    t_analysis = time.perf_counter() - t0 - t_train
    per_run, agg = findings_table(out, args.methods, args.seeds)
    per_run.to_csv(out / "findings_runs.csv", index=False)
    agg.to_csv(out / "findings.csv", index=False)
    table = findings_markdown(agg)
    (out / "findings.md").write_text(
        f"# Findings on digits ({'clean labels' if args.clean else '20% label noise'}, "
        f"{cfg['epochs']} epochs, seeds {' '.join(map(str, args.seeds))})\n\n{table}")
    (out / "study.json").write_text(json.dumps(dict(config=cfg, seeds=args.seeds, methods=args.methods,
                                                    train_s=t_train, analysis_s=t_analysis), indent=2,
                                               default=list) + "\n")
    if not args.no_report:
        from landscape.report import build_report

        title = f"Robust overfitting on digits ({'clean' if args.clean else '20% label noise'})"
        html = build_report(out, out, progress=progress, title=title)
        log(f"  report: {html}")
    log(table)
    log(f"done in {time.perf_counter() - t0:.0f} s (training {t_train:.0f} s, analysis {t_analysis:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
