"""Evidence for ``landscape attribute`` on the demo's PGD-AT setting: are the flipped labels ranked first, and
does removing the top-ranked samples shrink robust overfitting more than removing random ones?

Pipeline (``python -m landscape.study.attribution --out runs/attribution``; the lead exposes it as
``landscape demo --study attribution``), per seed:

1. **train** PGD-AT exactly as the demo's ``pgd_at`` variant (:func:`landscape.study.experiments.study_config`:
   MLP 64-256-256-10 on a 300-sample stratified digits subset with 20 % symmetric label noise, 150 epochs),
   keeping every epoch's checkpoint. The flipped indices are recomputed with
   :func:`landscape.training.prepare_data` and the seed, and checked against the ``n_flipped`` that
   ``settings.json`` records (``--reuse DEMO_DIR`` takes ``DEMO_DIR/pgd_at/s<seed>`` instead of training; the
   demo keeps every 10th epoch + best + last, so learning epochs are coarser there);
2. **histories**: the trajectory of every kept checkpoint on the training samples *with the labels trained
   on* (sample id = index into the 300-sample training set) and a 300-sample test subset, measures ``grad``,
   ``curv_adv`` and ``logit_margin``, PGD-10 (:func:`landscape.trajectory.analyse_trajectory`, ``histories=True``);
3. **ranking**: :func:`landscape.attribution.attribute` by each score; precision and recall of the flipped
   labels among the top k = (number flipped), against the chance rate k / n;
4. **retraining**: PGD-AT again, same seed and settings, on the training set less (a) the top k of each score,
   (b) k random samples, (c) the k flipped samples (oracle); the RO gap is the best − last test PGD accuracy of
   each run's log (best by the official rule), in points (``none``: the runs of stage 1, nothing removed).

Verdicts (:func:`landscape.study.claims.verdict`, the claims table's rule): paired over seeds, the RO gap after
random removal minus the gap after top-k removal must exceed 2 standard errors; the precision goal is >= 80 %
for the best score. Tables (CSV, in ``--out``): ``attribution_precision_runs.csv``, ``attribution_precision.csv``,
``attribution_retrain_runs.csv``, ``attribution_retrain.csv``, ``attribution_claims.csv``, the ranking of each
seed in ``pgd_at/s<seed>/attribution/ranking.csv``, the first seed's top-8 figure in
``figures/findings_attribution.png``, and ``attribution.md`` rendered from them
(:func:`evidence_markdown`; ``--doc docs/attribution.md`` rewrites that page's generated block from the CSVs).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._io import atomic_write_text
from ..runs import write_file
from ._format import pm
from .claims import K_SE, mean_se, verdict

__all__ = ["REMOVALS", "evidence_markdown", "flipped_indices", "main", "ro_gap", "top_figure", "update_doc"]

#: training-set removals compared by the retraining check (each removes k samples)
REMOVALS = ("memorisation", "curvature_growth", "learning_epoch", "combined", "random", "flipped")
_MEASURES = ("grad", "curv_adv", "logit_margin")
_BEGIN, _END = "<!-- BEGIN generated:attribution -->", "<!-- END generated:attribution -->"


def _config(quick: bool, epochs: int | None) -> dict:
    from .config import study_config

    cfg = study_config(quick=quick, epochs=epochs)
    cfg["label_noise"] = 0.2
    return cfg


def _data(seed: int, cfg: dict):
    """``(x_train, y_clean), (x_test, y_test)`` as the demo trains on them."""
    from ..datasets import load_dataset

    return load_dataset("digits", "train", n=cfg["train_n"], seed=seed), load_dataset("digits", "test")


def flipped_indices(seed: int, cfg: dict) -> tuple[np.ndarray, "torch.Tensor"]:
    """``(indices of the flipped training labels, the noisy labels)`` of the demo's run with ``seed``,
    recomputed with :func:`landscape.training.prepare_data` exactly as :func:`landscape.training.train` does."""
    from ..training import prepare_data

    data = _data(seed, cfg)
    (_, y_noisy), _ = prepare_data(data, label_noise=cfg["label_noise"], num_classes=10, seed=seed)
    return np.flatnonzero((y_noisy != data[0][1]).numpy()), y_noisy


def _train(folder: Path, seed: int, cfg: dict, data, *, label_noise: float, save_every) -> Path:
    from ..training import seeded_model, train

    arch_kwargs = dict(hidden=tuple(cfg["hidden"]))
    if (folder / "metrics.csv").is_file() and len(pd.read_csv(folder / "metrics.csv")) >= 2 * cfg["epochs"]:
        return folder  # finished before
    train(seeded_model("mlp", seed, **arch_kwargs), data, method="pgd_at", eps=cfg["eps"], steps=cfg["steps"],
          epochs=cfg["epochs"], lr=cfg["lr"], lr_milestones=cfg["lr_milestones"], momentum=cfg["momentum"],
          weight_decay=cfg["weight_decay"], batch_size=cfg["batch_size"], label_noise=label_noise, seed=seed,
          eval_n=cfg["eval_n"], eval_steps=cfg["eval_steps"], save_every=save_every, out_dir=folder, arch="mlp",
          arch_kwargs=arch_kwargs, dataset="digits", progress=False)
    return folder


def ro_gap(folder: Path) -> dict:
    """Best (official rule) and last test PGD accuracy of a run's log, and their gap, in points."""
    from ..diagnose import best_epoch

    b = best_epoch(None, log=pd.read_csv(Path(folder) / "metrics.csv"))
    return dict(best_epoch=b.epoch, best=100 * b.acc_adv, last=100 * b.last_acc_adv,
                gap=100 * (b.acc_adv - b.last_acc_adv))


def rank_seed(out: Path, seed: int, cfg: dict, reuse: Path | None, threads: int = 1) -> list[dict]:
    """Stages 1-3 for one seed: train (or reuse), histories, rankings; returns the precision rows."""
    import glob

    import torch

    from ..attribution import SCORES, attribute, top_precision
    from ..trajectory import analyse_trajectory

    torch.set_num_threads(threads)
    flipped, y_noisy = flipped_indices(seed, cfg)
    folder = (reuse / "pgd_at" / f"s{seed}") if reuse is not None else out / "pgd_at" / f"s{seed}"
    if reuse is None:
        _train(folder, seed, cfg, _data(seed, cfg), label_noise=cfg["label_noise"], save_every=None)
    recorded = json.loads((folder / "settings.json").read_text()).get("n_flipped")
    if recorded != len(flipped):
        raise RuntimeError(f"{folder}: settings.json records n_flipped={recorded}, recomputed {len(flipped)}")
    (x, _), test = _data(seed, cfg)
    analysis = out / "pgd_at" / f"s{seed}" / "attribution"
    analyse_trajectory(sorted(glob.glob(str(folder / "model_e*.pt"))), "mlp", {"train": (x, y_noisy), "test": test},
                       out_dir=analysis, arch_kwargs=dict(hidden=tuple(cfg["hidden"])), measures=list(_MEASURES),
                       n=cfg["train_n"], eps=cfg["eps"], steps=cfg["analysis_steps"], seed=seed, progress=False,
                       histories=True, run=f"pgd_at/s{seed}")
    best = ro_gap(folder)["best_epoch"]
    rows, rankings = [], {}
    for by in SCORES:
        ranked = attribute(analysis, best_epoch=best, by=by)
        rankings[by] = ranked["sample_id"].to_numpy()
        rows.append(dict(seed=seed, score=by, best_epoch=best, best_epoch_used=ranked.attrs["best_epoch_used"],
                         n=len(ranked), **top_precision(ranked, flipped)))
    full = attribute(analysis, best_epoch=best)
    full["flipped"] = full["sample_id"].isin(flipped)
    write_file(analysis / "ranking.csv", full)
    np.savez(analysis / "removals.npz", flipped=flipped, **{k: v[:len(flipped)] for k, v in rankings.items()})
    return rows


def retrain_one(out: Path, seed: int, removal: str, cfg: dict, threads: int = 1) -> dict:
    """Stage 4 for one (seed, removal): PGD-AT without the k chosen samples; returns its RO gap row."""
    import torch

    torch.set_num_threads(threads)
    chosen = np.load(out / "pgd_at" / f"s{seed}" / "attribution" / "removals.npz")
    k = len(chosen["flipped"])
    if removal == "random":
        drop = np.random.default_rng([seed, 7919]).choice(cfg["train_n"], size=k, replace=False)
    else:
        drop = chosen[removal]
    _, y_noisy = flipped_indices(seed, cfg)
    (x, _), test = _data(seed, cfg)
    keep = np.setdiff1d(np.arange(len(x)), drop)
    folder = out / "retrain" / removal / f"s{seed}"
    _train(folder, seed, cfg, ((x[keep], y_noisy[keep]), test), label_noise=0.0, save_every=10 ** 6)
    flipped_removed = int(np.isin(drop, chosen["flipped"]).sum())
    return dict(seed=seed, removal=removal, k=k, flipped_removed=flipped_removed, **ro_gap(folder))


def _summaries(precision: pd.DataFrame, retrain: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    prec = precision.groupby("score", sort=False).agg(
        precision=("precision", "mean"), precision_sd=("precision", "std"), recall=("recall", "mean"),
        chance=("chance", "mean"), k=("k", "mean"), seeds=("seed", "nunique")).reset_index()
    base = retrain[retrain["removal"] == "random"].set_index("seed")["gap"]
    rows = []
    for removal, part in retrain.groupby("removal", sort=False):
        gap = part.set_index("seed")["gap"]
        shrink, se, n = mean_se(base - gap)  # paired by seed: > 0 = removal shrinks the gap more than random
        mean_gap, gap_se, _ = mean_se(gap)
        rows.append(dict(removal=removal, gap=mean_gap, gap_se=gap_se, best=float(part["best"].mean()),
                         last=float(part["last"].mean()), shrink_vs_random=shrink, shrink_se=se, seeds=n,
                         verdict="–" if removal in ("random", "none") else verdict(shrink, se, n=n)))
    comp = pd.DataFrame(rows)
    best_score = prec.loc[prec[prec["score"].isin(["memorisation", "curvature_growth", "learning_epoch",
                                                   "combined"])]["precision"].idxmax()]
    claims = [dict(claim="the best attribution score ranks the flipped labels first (goal: precision >= 80 %)",
                   evidence=f"precision of the flipped labels among the top k of {best_score['score']}: "
                            f"{pm(100 * best_score['precision'], 100 * best_score['precision_sd'] / math.sqrt(best_score['seeds']), 1, label='se')} "
                            f"% vs chance {100 * best_score['chance']:.0f} %, {int(best_score['seeds'])} seed(s)",
                   value=round(float(best_score["precision"]), 6),
                   holds="yes" if best_score["precision"] >= 0.8 else "no")]
    for _, r in comp[~comp["removal"].isin(["random", "none"])].iterrows():
        claims.append(dict(claim=f"removing the top k by {r['removal']} shrinks the RO gap more than k random samples"
                           if r["removal"] != "flipped" else "removing the k flipped samples (oracle) shrinks the RO gap "
                           "more than k random samples",
                           evidence=f"RO gap after random − after {r['removal']} removal (points, paired by seed): "
                                    f"{pm(r['shrink_vs_random'], r['shrink_se'], 1, label='se')}, {int(r['seeds'])} seed(s)",
                           value=round(float(r["shrink_vs_random"]), 6), holds=r["verdict"]))
    return prec, comp, pd.DataFrame(claims, columns=["claim", "evidence", "value", "holds"])


def evidence_markdown(out: str | Path) -> str:
    """The evidence tables as Markdown, rendered only from the CSVs in ``out`` (nothing typed)."""
    out = Path(out)
    prec = pd.read_csv(out / "attribution_precision.csv")
    comp = pd.read_csv(out / "attribution_retrain.csv")
    claims = pd.read_csv(out / "attribution_claims.csv")
    meta = json.loads((out / "attribution.json").read_text()) if (out / "attribution.json").is_file() else {}
    lines = [f"Setting: {meta.get('setting', 'the demo PGD-AT setting')}; seeds {meta.get('seeds', '?')}; "
             f"{meta.get('provenance', '')}".rstrip("; "), "",
             "| score | precision of flipped labels in top k | recall | chance | seeds |", "|---|---|---|---|---|"]
    for _, r in prec.iterrows():
        se = r["precision_sd"] / math.sqrt(r["seeds"]) if r["seeds"] > 1 else math.nan
        lines.append(f"| {r['score']} | {pm(100 * r['precision'], 100 * se, 1)} % | {100 * r['recall']:.1f} % | "
                     f"{100 * r['chance']:.0f} % | {int(r['seeds'])} |")
    lines += ["", "| training set less k samples by | RO gap (points) | best | last | gap shrink vs random (paired) | "
              "verdict |", "|---|---|---|---|---|---|"]
    for _, r in comp.iterrows():
        lines.append(f"| {r['removal']} | {pm(r['gap'], r['gap_se'], 1)} | {r['best']:.1f} | {r['last']:.1f} | "
                     f"{pm(r['shrink_vs_random'], r['shrink_se'], 1)} | {r['verdict']} |")
    lines += ["", "| claim | evidence | holds |", "|---|---|---|"]
    lines += [f"| {r['claim']} | {r['evidence']} | {r['holds']} |" for _, r in claims.iterrows()]
    return "\n".join(lines) + "\n"


def update_doc(doc: str | Path, out: str | Path) -> bool:
    """Rewrite the generated block of ``doc`` from ``out``'s CSVs; True when the text changed."""
    doc = Path(doc)
    text = doc.read_text()
    if _BEGIN not in text or _END not in text:
        raise ValueError(f"{doc} has no {_BEGIN} ... {_END} block")
    head, rest = text.split(_BEGIN, 1)
    new = f"{head}{_BEGIN}\n{evidence_markdown(out)}{_END}{rest.split(_END, 1)[1]}"
    if new != text:
        atomic_write_text(doc, new)
    return new != text


def top_figure(out: str | Path, seed: int, cfg: dict, top: int = 8) -> Path:
    """The top-``top`` samples of ``seed`` (images, label trained on with the original, curves) saved as
    ``out/figures/findings_attribution.png``, the name the report embeds from a study folder."""
    import matplotlib

    matplotlib.use("Agg")
    from ..plotting import save_figure
    from ..plotting.attribution import attribution_section

    (x, y_clean), _ = _data(seed, cfg)
    _, fig = attribution_section(Path(out) / "pgd_at" / f"s{seed}" / "attribution", top=top, images=x,
                                 true_labels=y_clean.numpy())
    fig.suptitle(f"Top {top} training samples by the combined score (PGD-AT on digits, seed {seed}; y: label "
                 "trained on, orig: before the label noise)\nblue: loss at x_adv · orange: curvature along the "
                 "adversarial direction · dotted: best epoch")
    return save_figure(fig, Path(out) / "figures" / "findings_attribution", formats=("png",))[0]


def _parallel(fn, calls, jobs: int) -> list:
    if jobs == 1 or len(calls) == 1:
        return [fn(*c) for c in calls]
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=jobs, backend="loky")(delayed(fn)(*c) for c in calls))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m landscape.study.attribution", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/attribution", help="output folder (default runs/attribution)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2 3 4; 0 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 150, 6 with --quick)")
    p.add_argument("--reuse", default=None, metavar="DEMO_DIR",
                   help="take the PGD-AT runs from this demo output folder (DEMO_DIR/pgd_at/s<seed>) instead of training")
    p.add_argument("--jobs", type=int, default=2, help="parallel processes (default 2)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    p.add_argument("--doc", default=None, metavar="MD", help="instead of running: rewrite MD's generated block from --out")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    out = Path(args.out)
    if args.doc is not None:
        changed = update_doc(args.doc, out)
        print(f"{'updated' if changed else 'unchanged'} {args.doc}")
        return 0
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    cfg = _config(args.quick, args.epochs)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    out.mkdir(parents=True, exist_ok=True)
    reuse = Path(args.reuse) if args.reuse else None
    t0 = time.perf_counter()
    log(f"attribution evidence: {len(seeds)} seed(s), {cfg['epochs']} epochs, {args.jobs} process(es) -> {out}")
    precision = pd.DataFrame([r for rows in _parallel(rank_seed, [(out, s, cfg, reuse) for s in seeds], args.jobs)
                              for r in rows])
    write_file(out / "attribution_precision_runs.csv", precision)
    top_figure(out, seeds[0], cfg)
    log(f"  rankings done ({time.perf_counter() - t0:.0f} s); retraining {len(seeds) * len(REMOVALS)} runs")
    retrain = pd.DataFrame(_parallel(retrain_one, [(out, s, r, cfg) for s in seeds for r in REMOVALS], args.jobs))
    base = [dict(seed=s, removal="none", k=0, flipped_removed=0,  # the runs ranked above, nothing removed
                 **ro_gap((reuse if reuse is not None else out) / "pgd_at" / f"s{s}")) for s in seeds]
    retrain = pd.concat([pd.DataFrame(base), retrain], ignore_index=True)
    write_file(out / "attribution_retrain_runs.csv", retrain)
    prec, comp, claims = _summaries(precision, retrain)
    write_file(out / "attribution_precision.csv", prec)
    write_file(out / "attribution_retrain.csv", comp)
    write_file(out / "attribution_claims.csv", claims)
    from .experiments import provenance

    total = time.perf_counter() - t0
    prov = provenance(total_s=total, jobs=args.jobs)
    setting = (f"PGD-AT, MLP {'-'.join(map(str, (64, *cfg['hidden'], 10)))} on a {cfg['train_n']}-sample digits "
               f"subset, {int(100 * cfg['label_noise'])} % symmetric label noise, {cfg['epochs']} epochs, eps {cfg['eps']}")
    write_file(out / "attribution.json", dict(
        setting=setting, seeds=" ".join(map(str, seeds)), config={k: v for k, v in cfg.items()},
        provenance=f"{prov['date']}, {prov['cpu']}, {prov['jobs']} process(es), {total:.0f} s",
        reuse=str(reuse) if reuse else None, k_se=K_SE))
    atomic_write_text(out / "attribution.md", "# Attribution evidence\n\n" + evidence_markdown(out))
    log(evidence_markdown(out))
    log(f"done in {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
