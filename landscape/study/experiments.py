"""The digits robust-overfitting study behind ``make demo`` / ``landscape demo``, with the claims table.

Pipeline (``landscape demo --out runs/demo``; ``python -m landscape.study`` is the same):

1. **train** every variant for each seed (default 0, 1, 2; :func:`landscape.training.train`, resumable,
   2 runs at a time by default through joblib):

   =====================  ====================================================================
   ``standard``           standard training (robustness also evaluated at a small eps)
   ``standard_gradreg``   standard training + input-gradient regularisation (λ ‖∇ₓL‖₁)
   ``pgd_at``             PGD adversarial training
   ``at_clean_half``      the AT objective with its clean term halved: ½·L(x) + [L(x_adv) − L(x)]
   ``at_advlc``           AT + AdvLC (λ = 0.3)
   ``at_gradreg``         AT + input-gradient regularisation (λ = 0.1)
   =====================  ====================================================================

2. **trajectory**: the input loss landscape at every k-th checkpoint plus the first, best and last
   (:func:`landscape.trajectory.analyse_trajectory`, into ``<run>/analysis``);
3. **slices**: 1D and 2D loss slices at the best and last epoch of ``pgd_at`` and ``at_advlc`` (first seed);
4. **findings and claims**: per variant, mean ± sd over seeds of the best/last test PGD accuracy and their
   gap (``findings.csv``, ``findings_runs.csv``, ``findings.md``), and one row per claim of the paper's
   abstract with a noise-aware verdict (``claims.csv``, :mod:`landscape.study.findings`,
   :mod:`landscape.study.claims`);
5. **report**: ``report.html`` (:func:`landscape.report.build_report`) and ``figures/findings_measures.png``.

Setting (default): MLP 64-256-256-10 (ReLU), 300-sample stratified training subset with 20 % symmetric label
noise, eps = 0.1 (L∞), PGD-7 (step 2.5·eps/7, random start) for training and PGD-10 for evaluation every epoch
on a fixed 300-sample subset of each split (per seed), a second evaluation at eps = 0.02 for the standard-training variants, SGD lr 0.1
momentum 0.9 weight decay 5e-4, ×0.1 after 50 % and 75 % of 150 epochs, batch 64, checkpoints kept for
epoch 1, every 10th, the best and the last. Label noise is what makes robust overfitting appear at this
scale: on clean digits PGD-AT does not robust-overfit (``--clean`` runs that variant).

Where this differs from the official CIFAR-10 protocol (:data:`landscape.training.PRESETS`) and why:
random start in the training PGD (the setting the demo's runs were tuned and checked with), no
crop/flip augmentation (8×8 digits; mirrored digits change class, and the RO here comes from memorising the
noisy labels), the clean pass order (no batch norm in the MLP, so it changes nothing), weight decay 5e-4
and batch 64 (the common Rice et al. setting; 300 samples make batches of 100 too few per epoch), 150 epochs,
and the per-epoch evaluation on a 300-sample subset of the test split rather than all of it (the official code
evaluates the whole test set; here that evaluation dominated the demo's time and took it past 5 minutes on
2 cores).

Every stage skips work already on disk, so an interrupted study continues where it stopped. ``--readme RUN_DIR``
publishes a finished run's tables into the documents instead (:mod:`landscape.study.docblocks`).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from .._io import atomic_write_text
from .._version import __version__
from ..runs import Run, run_file, write_file
from .claims import claims_markdown, claims_table
from .findings import findings_markdown, findings_table, log_best_epoch, run_dir
from .monitor import evaluate_warnings, monitor_for, warning_markdown

__all__ = ["VARIANTS", "DEFAULT_VARIANTS", "STUDY_MEASURES", "study_config", "epochs_to_analyse", "run_job",
           "provenance", "main"]

from .config import (DEFAULT_VARIANTS, SLICED, SMALL_EPS_VARIANTS, STUDY_MEASURES, STUDY_WEIGHT_MEASURES,  # noqa: F401
                     VARIANTS, study_config, train_one)


# ------------------------------------------------------------------------------------------------- train
# -------------------------------------------------------------------------------------------- trajectory
def epochs_to_analyse(epochs: int, every: int, best: int) -> list[int]:
    """Every ``every``-th epoch, the first, the best and the last (sorted, unique) — the kept checkpoints."""
    return sorted({1, best, epochs, *range(every, epochs + 1, every)})


def analyse_one(folder: Path, seed: int, cfg: dict, *, progress: bool) -> pd.DataFrame:
    """Trajectory analysis of the kept checkpoints of one run into ``folder/analysis``."""
    from ..training import checkpoint_path
    from ..trajectory import analyse_trajectory

    metrics = pd.read_csv(folder / run_file("metrics"))
    chosen = epochs_to_analyse(cfg["epochs"], cfg["every"], log_best_epoch(metrics))
    return analyse_trajectory(
        [checkpoint_path(folder, e) for e in chosen], "mlp", "digits", out_dir=folder / "analysis",
        arch_kwargs=dict(hidden=tuple(cfg["hidden"])), measures=cfg["measures"], n=cfg["analysis_n"],
        eps=cfg["eps"], steps=cfg["analysis_steps"], seed=seed, run=f"{folder.parent.name}/{folder.name}",
        progress=progress)


# ------------------------------------------------------------------------------------------------ slices
def slice_one(folder: Path, seed: int, cfg: dict) -> None:
    """Loss slices at the best and the last epoch into ``folder/analysis``: input space
    (``slices_{1d,2d}.parquet``) and weight space (``weight_slices_1d.parquet``, ``weight_path*.parquet``).

    Input space. 1D: along the adversarial and a random direction (L∞-normalised, so ``a`` is in pixel units,
    ±2·eps) for ``slice_n`` test images; 2D: the adversarial × random plane around the first of them.

    Weight space (:mod:`landscape.weight_slices`), on the ``analysis_n`` test samples of the trajectory: the
    mean clean and robust loss along one filter-normalised random direction (seeded by the run's seed;
    ``weight_slice_grid`` points over ±``weight_slice_radius``; x_adv attacked once at the checkpoint and kept
    fixed), at the best and the last epoch; and the PCA plane of the kept checkpoints' weights (epoch 1, every
    ``every``-th, best, last) with the clean loss on a ``weight_path_grid``² grid over it
    (``weight_path.parquet``, ``weight_path_variance.parquet``, ``weight_path_surface.parquet``, the names
    ``landscape slice --space weights`` writes).

    Best and last are the epochs that :func:`landscape.diagnose.diagnose` finds in the trajectory table, so the
    report labels them. Each part is skipped when its files exist for the same epochs.
    """
    from ..checkpoints import load_model
    from ..diagnose import diagnose

    analysis = folder / "analysis"
    trajectory = pd.read_parquet(analysis / run_file("trajectory"))
    d = diagnose(trajectory, log=pd.read_csv(folder / run_file("metrics")))
    kept = sorted(int(e) for e in trajectory["epoch"].dropna().unique())  # what analyse_one measured
    epochs = sorted({int(d.best_epoch if d.best_epoch is not None else d.last_epoch), int(d.last_epoch)})

    def done(keys) -> bool:
        paths = [analysis / run_file(k) for k in keys]
        return all(p.is_file() for p in paths) and all(
            sorted(pd.read_parquet(p, columns=["epoch"])["epoch"].dropna().astype(int).unique().tolist()) == epochs
            for p in paths)

    def model_at(epoch: int):
        from ..training import checkpoint_path

        return load_model(checkpoint_path(folder, epoch), "mlp", hidden=tuple(cfg["hidden"]))

    if not done(("slices_1d", "slices_2d")):
        _input_slices(analysis, seed, cfg, epochs, model_at)
    if cfg.get("weight_slice_grid") and not (done(("weight_slices_1d",))
                                             and (analysis / run_file("weight_path_surface")).is_file()):
        _weight_slices(folder, seed, cfg, epochs, kept, model_at)


def _input_slices(analysis: Path, seed: int, cfg: dict, epochs: list[int], model_at) -> None:
    from ..datasets import load_dataset
    from ..slices import grid, slice_1d, slice_2d

    x, y = load_dataset("digits", "test", n=cfg["slice_n"], seed=seed)
    coords = grid(2 * cfg["eps"], cfg["slice_grid"])
    kw = dict(eps=cfg["eps"], steps=cfg["analysis_steps"], seed=seed)
    parts = {"1d": [], "2d": []}
    for epoch in epochs:
        model = model_at(epoch)
        for direction in ("adversarial", "random"):
            parts["1d"].append(slice_1d(model, x, y, direction, coords, **kw).assign(epoch=epoch))
        parts["2d"].append(slice_2d(model, x[:1], y[:1], "adversarial", "random", coords, coords, **kw)
                           .assign(epoch=epoch))
    for key, frames in parts.items():
        table = pd.concat(frames, ignore_index=True)
        table.attrs = dict(frames[0].attrs)
        write_file(analysis / run_file(f"slices_{key}"), table, attrs=True)


def _weight_slices(folder: Path, seed: int, cfg: dict, epochs: list[int], chosen: list[int], model_at) -> None:
    import numpy as np

    from ..attacks import AttackSettings
    from ..datasets import load_dataset
    from ..training import checkpoint_path
    from ..weight_slices import path_surface, to_parquet, training_path, weight_slice_1d

    analysis = folder / "analysis"
    x, y = load_dataset("digits", "test", n=cfg["analysis_n"], seed=seed)  # the trajectory's test samples
    attack = AttackSettings("pgd", cfg["eps"], cfg["analysis_steps"])
    r, n = cfg["weight_slice_radius"], cfg["weight_slice_grid"]
    alphas = np.linspace(-r, r, n)
    parts = []
    for epoch in epochs:
        ckpt = checkpoint_path(folder, epoch)
        parts.append(weight_slice_1d(model_at(epoch), x, y, "random", alphas, loss="both", attack=attack, seed=seed)
                     .assign(epoch=epoch, checkpoint=str(ckpt)))
    table = pd.concat(parts, ignore_index=True)
    table.attrs = dict(parts[0].attrs)
    to_parquet(table, analysis / run_file("weight_slices_1d"))
    if len(chosen) < 3:  # a plane needs three points (e.g. a 2-epoch smoke run): no path, the report says so
        return
    path = training_path((model_at(e) for e in chosen), epochs=chosen)  # one model at a time
    path.coords["checkpoint"] = [str(checkpoint_path(folder, e)) for e in path.coords["epoch"]]
    surface = path_surface(model_at(chosen[-1]), x, y, path, n=cfg["weight_path_grid"], loss="clean", seed=seed)
    to_parquet(path.coords, analysis / run_file("weight_path"))
    to_parquet(path.variance, analysis / run_file("weight_path_variance"))
    to_parquet(surface, analysis / run_file("weight_path_surface"))


# ---------------------------------------------------------------------------------------------- figure
def findings_figure(out: Path, variants, seeds, cfg: dict):
    """Test-split measures vs epoch, one line per adversarially trained variant (mean over seeds).

    The standard-training variants are left out: their non-robust landscape is an order of magnitude
    sharper and would flatten the AT curves. Only the epochs analysed in every run are used.
    """
    from ..plotting import PLOTTED_MEASURES, plot_measures
    from ..plotting.methods import method_colors

    parts, best = [], {}  # best: per variant, the diagnosed best epochs of its seeds (as the findings table)
    for v in variants:
        if v in SMALL_EPS_VARIANTS:
            continue
        for s in seeds:
            t = pd.read_parquet(run_dir(out, v, s) / "analysis" / run_file("trajectory"))
            parts.append(t[(t["split"] == "test") & t["error"].isna()].assign(run=v, seed=s))
            best.setdefault(v, []).append(log_best_epoch(pd.read_csv(run_dir(out, v, s) / run_file("metrics"))))
    if not parts:
        return None
    table = pd.concat(parts, ignore_index=True)
    grid = set(epochs_to_analyse(cfg["epochs"], cfg["every"], 1))
    table = table[table["epoch"].isin(grid)]
    measures = [m for m in PLOTTED_MEASURES if f"{m}_mean" in table.columns]
    seeds_text = f"mean over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    # the report orders methods as it finds their folders (alphabetically) and colours them in that order
    colors = method_colors(sorted(variants))
    dotted = "median over seeds of the diagnosed best epochs" if len(seeds) > 1 else "diagnosed best epoch"
    return plot_measures(table, measures, splits=("test",), band=False, colors=colors,
                         best_epochs={v: float(pd.Series(e).median()) for v, e in best.items()},
                         title=f"Test-set landscape measures ({seeds_text}; dotted: {dotted})")


# ------------------------------------------------------------------------------------------- provenance
def provenance(*, total_s: float | None = None, jobs: int | None = None) -> dict:
    """Machine, date and versions of this process, for the generated result blocks."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = math.nan
    return dict(date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), cpu=cpu,
                cores=os.cpu_count(), load_1min=round(load, 2), python=platform.python_version(),
                torch=torch.__version__, landscape=__version__, jobs=jobs,
                total_s=None if total_s is None else round(total_s, 1))


# ------------------------------------------------------------------------------------------------- runs
def run_job(out: Path, variant: str, seed: int, cfg: dict, *, progress: bool, threads: int = 1) -> dict:
    """Train then analyse one run (slices too for the first seed of AT and AdvLC); returns its timings in
    seconds (``train_s``, ``analysis_s``)."""
    import torch

    torch.set_num_threads(threads)  # tiny models: more threads only add contention
    t0 = time.perf_counter()
    folder = run_dir(out, variant, seed)
    train_one(out, variant, seed, cfg, progress=progress,
              on_epoch=monitor_for(folder, seed, cfg) if cfg.get("monitor", True) else None)
    t1 = time.perf_counter()
    analyse_one(folder, seed, cfg, progress=progress)
    if variant in SLICED and seed == cfg["slice_seed"]:
        slice_one(folder, seed, cfg)
    return dict(variant=variant, seed=seed, train_s=t1 - t0, analysis_s=time.perf_counter() - t1)


def run_all(out: Path, runs: list[tuple[str, int]], cfg: dict, *, jobs: int, progress: bool,
            threads: int) -> list[dict]:
    """:func:`run_job` for every (variant, seed): in this process, or in ``jobs`` joblib (loky) workers."""
    if jobs == 1 or len(runs) == 1:
        return [run_job(out, v, s, cfg, progress=progress, threads=threads) for v, s in runs]
    from joblib import Parallel, delayed
    from .._progress import tqdm  # quiet off a terminal

    pool = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")
    results = pool(delayed(run_job)(out, v, s, cfg, progress=False, threads=threads) for v, s in runs)
    done = list(tqdm(results, total=len(runs), desc=f"runs ({jobs} processes)", unit="run",
                     disable=not progress))
    order = {r: i for i, r in enumerate(runs)}
    return sorted(done, key=lambda r: order[(r["variant"], r["seed"])])


# -------------------------------------------------------------------------------------------------- main
#: the studies besides this one (``--study NAME``): name -> module whose ``main(argv)`` runs it.
STUDIES = {"methods": "landscape.study.methods", "attribution": "landscape.study.attribution"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m landscape.study", description=__doc__.splitlines()[0])
    p.add_argument("--study", default="robust_overfitting", choices=["robust_overfitting", *STUDIES],
                   help="which study: the default robust-overfitting demo, or 'methods' (AdvLC against similar "
                        "methods) or 'attribution' (which training samples drive RO); each is resumable")
    p.add_argument("--out", default=None, help="output folder (default runs/demo, runs/<study> for the others)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="seeds to run (default: 0 1 2; 0 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 150; 6 with --quick)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS),
                   metavar="VARIANT", help=f"variants to train: {', '.join(VARIANTS)} (default: all but at_excess)")
    p.add_argument("--every", type=int, default=None,
                   help="keep and analyse every k-th checkpoint, plus the first, best and last (default 10)")
    p.add_argument("--clean", action="store_true", help="no label noise (clean digits do not robust-overfit)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (seconds)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--jobs", type=int, default=2, help="runs trained/analysed in parallel processes (default 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1: the models are tiny)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--readme", metavar="RUN_DIR", default=None,
                   help="instead of running: copy RUN_DIR's summary tables to docs/results/ and rewrite the "
                        "generated blocks of README.md and docs/findings.md from them (run in the repository)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = "runs/demo" if args.study == "robust_overfitting" else f"runs/{args.study}"
    args.seeds_given = args.seeds is not None
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


#: where the demo looks for the methods study's claims (``landscape demo --study methods``), first found wins:
#: a study run beside the demo's output, else the committed results of the repository.
METHODS_RESULTS = ("{out}/../methods", "docs/results/methods")


def methods_claims(out: Path) -> pd.DataFrame:
    """The methods study's claim rows (robustness against TRADES, MART, AWP, CURE, LLR, gradient regularisation;
    efficiency) for the demo's claims table, read from its ``methods_claims.csv`` (:data:`METHODS_RESULTS`) with
    the source named in the evidence; one "not measured" row when no study was run."""
    from .claims import CLAIM_COLUMNS

    for pattern in METHODS_RESULTS:
        path = Path(pattern.format(out=out)) / "methods_claims.csv"
        if path.is_file():
            rows = pd.read_csv(path)
            rows["evidence"] = [f"methods study ({path.parent}): {e}" for e in rows["evidence"]]
            return rows[CLAIM_COLUMNS]
    return pd.DataFrame([dict(claim="4. AdvLC gives the highest robustness among similar methods",
                              evidence="not measured: run `landscape demo --study methods` (about an hour on 2 cores)",
                              value=math.nan, holds="inconclusive")], columns=CLAIM_COLUMNS)


def _other_study(args: argparse.Namespace) -> int:
    import importlib

    argv = ["--out", str(args.out), "--jobs", str(args.jobs)]
    if args.seeds_given:
        argv += ["--seeds", *map(str, args.seeds)]
    argv += [f for f, on in (("--quick", args.quick), ("--quiet", args.quiet)) if on]
    return importlib.import_module(STUDIES[args.study]).main(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.study != "robust_overfitting":
        return _other_study(args)
    if args.readme is not None:
        from .docblocks import publish

        for path in publish(Path(args.readme), Path(".")):
            print(f"updated {path}")
        return 0
    cfg = study_config(quick=args.quick, epochs=args.epochs, every=args.every, clean=args.clean)
    cfg["slice_seed"] = args.seeds[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    log = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    runs = [(v, s) for s in args.seeds for v in args.methods]
    log(f"digits robust overfitting: {len(runs)} run(s) of {cfg['epochs']} epochs, analysing every "
        f"{cfg['every']}th checkpoint + best + last, {args.jobs} process(es) -> {out}")
    timings = run_all(out, runs, cfg, jobs=args.jobs, progress=progress, threads=args.threads)
    t_runs = time.perf_counter() - t0
    per_run, agg = findings_table(out, args.methods, args.seeds, eps=cfg["eps"])
    warnings_table = evaluate_warnings(out)  # the training-time early warning, scored on every run: monitor_eval.csv
    claims = pd.concat([claims_table(per_run), methods_claims(out)], ignore_index=True)
    study = Run(out)  # every file of the study folder is written atomically
    write_file(out / "findings_runs.csv", per_run)
    study.write("findings", agg)
    study.write("claims", claims)
    table = findings_markdown(agg)
    atomic_write_text(out / "findings.md",
        f"# Findings on digits ({'clean labels' if args.clean else '20% label noise'}, "
        f"{cfg['epochs']} epochs, seeds {' '.join(map(str, args.seeds))})\n\n## Claims\n\n"
        f"{claims_markdown(claims)}\n## Per variant\n\n{table}"
        + (f"\n## Early warning of robust overfitting during training (landscape.monitor)\n\n"
           f"{warning_markdown(warnings_table)}\n" if len(warnings_table) else ""))
    fig = findings_figure(out, args.methods, args.seeds, cfg)
    if fig is not None:
        import matplotlib.pyplot as plt

        from ..plotting import save_figure

        save_figure(fig, out / "figures" / "findings_measures", formats=("png",))
        plt.close(fig)
    if not args.no_report:
        from ..report import build_report

        title = f"Robust overfitting on digits ({'clean' if args.clean else '20% label noise'})"
        html = build_report(out, out, progress=progress, title=title)
        log(f"  report: {html}")
    total = time.perf_counter() - t0
    atomic_write_text(out / "study.json", json.dumps(dict(
        config=cfg, seeds=args.seeds, variants=args.methods, jobs=args.jobs, runs_s=t_runs, total_s=total,
        command=" ".join(["python -m landscape.study", *sys.argv[1:]] if argv is None else ["landscape demo", *argv]),
        provenance=provenance(total_s=total, jobs=args.jobs), timings=timings), indent=2, default=list) + "\n")
    log(claims_markdown(claims))
    log(table)
    log(f"done in {total:.0f} s (training + trajectories {t_runs:.0f} s, {args.jobs} process(es))")
    return 0
