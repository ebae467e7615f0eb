"""Robust overfitting on the bundled 8x8 digits, and what the input loss landscape shows about it.

Pipeline (``make demo`` runs ``python analyses/digits_robust_overfitting.py --out runs/demo``):

1. **train** ``standard``, ``pgd_at``, ``at_advlc`` and ``at_gradreg`` for each seed (default 0, 1, 2)
   (:func:`landscape.training.train`; one checkpoint per epoch; resumable; 2 runs at a time by default);
2. **trajectory**: measure the input loss landscape (input-gradient norms, adversarial-direction curvature,
   Taylor gap, logit variation) at every k-th checkpoint plus the best and the last epoch
   (:func:`landscape.trajectory.analyse_trajectory`, into ``<run>/analysis``);
3. **slices**: 1D loss slices (adversarial and random directions, 32 test images) and a 2D adversarial ×
   random surface at the best and the last epoch of ``pgd_at`` and ``at_advlc`` (first seed), for the report;
4. **findings**: per method, mean ± sd over seeds of the best and last test PGD accuracy, their gap, and the
   test gradient norm and curvature at the best vs the last epoch (``findings.csv``, ``findings.md``);
5. **report**: figures and the diagnosis of every run in ``<out>/report.html``
   (:func:`landscape.report.build_report`), plus ``figures/findings_measures.png`` (test measures vs epoch
   per AT method, mean over seeds).

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
#: methods whose loss slices (first seed only) go into the report.
SLICED = ("pgd_at", "at_advlc")
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
        slice_n=4 if quick else 32, slice_grid=9 if quick else 41,
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
    """Best epoch of ``metrics.csv`` by the official rule (latest on ties): :func:`landscape.diagnose.best_epoch`."""
    from landscape.diagnose import best_epoch as official_best

    return official_best(None, log=metrics).epoch


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


# ------------------------------------------------------------------------------------------------ slices
def slice_one(folder: Path, seed: int, cfg: dict) -> None:
    """Loss slices at the best and the last epoch into ``folder/analysis/slices_{1d,2d}.parquet``.

    1D: along the adversarial and a random direction (L∞-normalised, so ``a`` is in pixel units, ±2·eps)
    for ``slice_n`` test images; 2D: the adversarial × random plane around the first of them. Best and last
    are the epochs that :func:`landscape.diagnose.diagnose` finds in the trajectory table, so the report
    labels them. Skipped when both files exist for the same epochs.
    """
    from landscape.checkpoints import load_model
    from landscape.data import load_dataset
    from landscape.diagnose import diagnose
    from landscape.slices import grid, slice_1d, slice_2d
    from landscape.training import checkpoint_path

    analysis = folder / "analysis"
    d = diagnose(pd.read_parquet(analysis / "trajectory.parquet"), log=pd.read_csv(folder / "metrics.csv"))
    epochs = sorted({int(d.best_epoch if d.best_epoch is not None else d.last_epoch), int(d.last_epoch)})
    paths = {k: analysis / f"slices_{k}.parquet" for k in ("1d", "2d")}
    if all(p.is_file() for p in paths.values()) and all(
            sorted(pd.read_parquet(p, columns=["epoch"])["epoch"].unique().tolist()) == epochs
            for p in paths.values()):
        return
    x, y = load_dataset("digits", "test", n=cfg["slice_n"], seed=seed)
    coords = grid(2 * cfg["eps"], cfg["slice_grid"])
    kw = dict(eps=cfg["eps"], steps=cfg["analysis_steps"], seed=seed)
    parts = {"1d": [], "2d": []}
    for epoch in epochs:
        model = load_model(checkpoint_path(folder, epoch), "mlp", hidden=tuple(cfg["hidden"]))
        for direction in ("adversarial", "random"):
            parts["1d"].append(slice_1d(model, x, y, direction, coords, **kw).assign(epoch=epoch))
        parts["2d"].append(slice_2d(model, x[:1], y[:1], "adversarial", "random", coords, coords, **kw)
                           .assign(epoch=epoch))
    for key, frames in parts.items():
        table = pd.concat(frames, ignore_index=True)
        table.attrs = dict(frames[0].attrs)
        tmp = paths[key].with_suffix(".parquet.tmp")
        table.to_parquet(tmp, index=False)
        tmp.replace(paths[key])


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
    row["clean_last"] = 100 * float(test["acc_clean"].iloc[-1])
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
    values = [c for c in runs.columns if c not in ("method", "seed")]
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
    head = ["method", "seeds", "best PGD acc (%)", "best epoch", "last PGD acc (%)", "best − last (points)",
            "last clean acc (%)", "grad ‖∇ₓL‖₁ best → last", "curv_adv best → last"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in agg.to_dict("records"):
        cells = [r["method"], str(r["seeds"]), _pm(r["best_mean"], r["best_std"], 1),
                 _pm(r["best_epoch_mean"], r["best_epoch_std"], 0), _pm(r["last_mean"], r["last_std"], 1),
                 _pm(r["gap_mean"], r["gap_std"], 1), _pm(r["clean_last_mean"], r["clean_last_std"], 1)]
        for name in FINDING_MEASURES.values():
            if f"{name}_best_mean" in r:
                cells.append(f"{_pm(r[f'{name}_best_mean'], r[f'{name}_best_std'], 3)} → "
                             f"{_pm(r[f'{name}_last_mean'], r[f'{name}_last_std'], 3)}")
            else:
                cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def findings_figure(out: Path, methods, seeds, cfg: dict):
    """Test-split measures vs epoch, one line per adversarially trained method (mean over seeds).

    ``standard`` is left out: its non-robust landscape is an order of magnitude sharper and would flatten
    the AT curves. Only the epochs analysed in every run (the every-k grid, first and last) are used.
    """
    from landscape.plotting import plot_measures

    parts = []
    for m in methods:
        if m == "standard":
            continue
        for s in seeds:
            t = pd.read_parquet(run_dir(out, m, s) / "analysis" / "trajectory.parquet")
            parts.append(t[(t["split"] == "test") & t["error"].isna()].assign(run=m, seed=s))
    if not parts:
        return None
    table = pd.concat(parts, ignore_index=True)
    grid = set(epochs_to_analyse(cfg["epochs"], cfg["every"], 1))
    table = table[table["epoch"].isin(grid)]
    measures = [m for m in ("grad_l1", "curv_adv", "taylor_gap", "logit_var") if f"{m}_mean" in table.columns]
    seeds_text = f"mean over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    return plot_measures(table, measures, splits=("test",), band=False,
                         title=f"Test-set landscape measures ({seeds_text}; dotted: best epoch)")


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="seeds to run (default: 0 1 2; 0 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 150; 6 with --quick)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"methods to train (default: all of {', '.join(METHODS)})")
    p.add_argument("--every", type=int, default=None,
                   help="analyse every k-th checkpoint, plus the first, best and last (default 10)")
    p.add_argument("--clean", action="store_true", help="no label noise (clean digits do not robust-overfit)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (seconds)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--jobs", type=int, default=2, help="runs trained/analysed in parallel processes (default 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1: the models are tiny)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    for name in ("threads", "jobs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.every is not None and args.every < 1:
        p.error(f"--every must be >= 1, got {args.every}")
    return args


def run_job(out: Path, method: str, seed: int, cfg: dict, *, progress: bool, threads: int = 1) -> dict:
    """Train then analyse one run (slices too for the first seed of AT and AdvLC); returns its timings in
    seconds (``train_s``, ``analysis_s``)."""
    import torch

    torch.set_num_threads(threads)  # tiny models: more threads only add contention
    t0 = time.perf_counter()
    folder = train_one(out, method, seed, cfg, progress=progress)
    t1 = time.perf_counter()
    analyse_one(folder, seed, cfg, progress=progress)
    if method in SLICED and seed == cfg["slice_seed"]:
        slice_one(folder, seed, cfg)
    return dict(method=method, seed=seed, train_s=t1 - t0, analysis_s=time.perf_counter() - t1)


def run_all(out: Path, runs: list[tuple[str, int]], cfg: dict, *, jobs: int, progress: bool,
            threads: int) -> list[dict]:
    """:func:`run_job` for every (method, seed): in this process, or in ``jobs`` spawned processes."""
    if jobs == 1 or len(runs) == 1:
        return [run_job(out, m, s, cfg, progress=progress, threads=threads) for m, s in runs]
    import concurrent.futures as cf
    import importlib
    import multiprocessing
    import site

    from tqdm.auto import tqdm

    here = str(Path(__file__).resolve().parent)
    site.addsitedir(here)  # so that the workers can import this script by name
    me = importlib.import_module(Path(__file__).stem)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=site.addsitedir, initargs=(here,)) as pool:
        futures = [pool.submit(me.run_job, out, m, s, cfg, progress=False, threads=threads) for m, s in runs]
        bar = tqdm(cf.as_completed(futures), total=len(futures), desc=f"runs ({jobs} processes)",
                   unit="run", disable=not progress)
        done = [f.result() for f in bar]
    order = {r: i for i, r in enumerate(runs)}
    return sorted(done, key=lambda r: order[(r["method"], r["seed"])])


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = study_config(args)
    cfg["slice_seed"] = args.seeds[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    log = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    runs = [(m, s) for s in args.seeds for m in args.methods]
    log(f"digits robust overfitting: {len(runs)} run(s) of {cfg['epochs']} epochs, analysing every "
        f"{cfg['every']}th checkpoint + best + last, {args.jobs} process(es) -> {out}")
    timings = run_all(out, runs, cfg, jobs=args.jobs, progress=progress, threads=args.threads)
    t_runs = time.perf_counter() - t0
    per_run, agg = findings_table(out, args.methods, args.seeds)
    per_run.to_csv(out / "findings_runs.csv", index=False)
    agg.to_csv(out / "findings.csv", index=False)
    table = findings_markdown(agg)
    (out / "findings.md").write_text(
        f"# Findings on digits ({'clean labels' if args.clean else '20% label noise'}, "
        f"{cfg['epochs']} epochs, seeds {' '.join(map(str, args.seeds))})\n\n{table}")
    fig = findings_figure(out, args.methods, args.seeds, cfg)
    if fig is not None:
        import matplotlib.pyplot as plt

        from landscape.plotting import save_figure

        save_figure(fig, out / "figures" / "findings_measures", formats=("png",))
        plt.close(fig)
    if not args.no_report:
        from landscape.report import build_report

        title = f"Robust overfitting on digits ({'clean' if args.clean else '20% label noise'})"
        html = build_report(out, out, progress=progress, title=title)
        log(f"  report: {html}")
    total = time.perf_counter() - t0
    (out / "study.json").write_text(json.dumps(dict(config=cfg, seeds=args.seeds, methods=args.methods,
                                                    jobs=args.jobs, runs_s=t_runs, total_s=total,
                                                    timings=timings), indent=2, default=list) + "\n")
    log(table)
    log(f"done in {total:.0f} s (training + trajectories {t_runs:.0f} s, {args.jobs} process(es))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
