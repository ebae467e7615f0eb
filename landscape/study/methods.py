"""AdvLC against similar methods on digits: robustness (PGD-10 and AutoAttack, best and last epoch) and cost.

The last sentence of the paper's abstract: AdvLC "achieves the highest robustness and efficiency compared to
similar previous methods". This study trains AdvLC and its peers — ``pgd_at``, ``trades``, ``mart``,
``awp_at``, ``cure``, ``llr``, ``at_gradreg`` (:mod:`landscape.objectives`, published hyper-parameters:
:data:`landscape.objectives.DEFAULT_LAM`, ``DEFAULT_PARAMS``) — for N seeds in the digits setting of the
robust-overfitting demo (:func:`landscape.study.experiments.study_config`: MLP 64-256-256-10, 300 training
samples with 20 % label noise, eps 0.1, 7 inner steps for every method, 150 epochs, PGD-10 evaluation on a
300-sample test subset every epoch), and reports per run

* ``best`` / ``last``: test PGD-10 accuracy (%) at the best epoch (official rule) and at the last epoch;
* ``aa_best`` / ``aa_last``: AutoAttack (``pyautoattack``, standard version; ``--aa-version apgd``: its APGD-CE
  and APGD-T only) accuracy (%) of those two checkpoints on a fixed ``aa_n``-sample test subset, the same
  subset for every method of a seed (``--aa-n 0`` skips it).

:func:`comparison_table`: for every peer and metric the paired difference AdvLC − peer over seeds (the same
seed gives both runs the same initial weights, training subset and label noise), its standard error
``sd/√n``, the seed count, the minimal detectable effect ``MDE = 2·se`` (the smallest difference this many
seeds resolve with the claims table's 2-se rule) and the verdict of :func:`landscape.study.claims.verdict`.
:func:`robustness_claim` condenses it into the claims row "AdvLC gives the highest robustness among similar
methods" (``yes`` only if AdvLC is resolvably better than every peer on the metric, ``no`` if some peer is
resolvably better); :func:`efficiency_claim` reads the cost benchmark (benchmarks/bench_methods.py CSV) for
"AdvLC costs less than the other landscape regularisers at equal PGD steps".

Resumable: training resumes (:func:`landscape.training.train`), AutoAttack results are cached per run
(``<run>/autoattack.json``), the tables are rebuilt from what is on disk. ``landscape demo --study methods``
(``python -m landscape.study --study methods``) runs :func:`main`.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pandas as pd

from .._io import atomic_write_text
from ..runs import write_file
from ._format import pm
from .claims import CLAIM_COLUMNS, K_SE, claims_markdown, mean_se, verdict
from .findings import run_dir, run_summary

__all__ = ["METHOD_VARIANTS", "PEERS", "REGULARISERS", "NO_INNER_STEPS", "METRICS", "methods_config", "train_method",
           "autoattack_run", "runs_table", "comparison_table", "robustness_claim", "efficiency_claim", "main"]

#: study variants: name -> keyword arguments of :func:`landscape.training.train` (lam None: published default).
METHOD_VARIANTS = {
    "at_advlc": dict(method="at_advlc", lam=0.3),
    "pgd_at": dict(method="pgd_at"),
    "trades": dict(method="trades"),
    "mart": dict(method="mart"),
    "awp_at": dict(method="awp_at"),
    "cure": dict(method="cure"),
    "llr": dict(method="llr"),
    "at_gradreg": dict(method="at_gradreg", lam=0.1),
    "awp_trades": dict(method="awp_trades"),
}
#: the methods AdvLC is compared with by default.
PEERS = ("pgd_at", "trades", "mart", "awp_at", "cure", "llr", "at_gradreg")
#: AdvLC's peers that regularise the loss landscape with an inner maximisation of the same ``steps`` (the
#: efficiency claim's comparison set, "at equal PGD steps").
REGULARISERS = ("at_gradreg", "llr", "trades", "mart", "awp_at")
#: peers without inner steps, shown beside the efficiency claim for context (CURE: two gradients, no attack).
NO_INNER_STEPS = ("cure",)
#: per-run robustness metrics: column -> description.
METRICS = {"last": "last-epoch PGD-10", "best": "best-epoch PGD-10", "aa_last": "last-epoch AutoAttack",
           "aa_best": "best-epoch AutoAttack"}
_AA_FILE = "autoattack.json"
#: ``aa_version="apgd"``: AutoAttack's two APGD attacks only (``version="custom"``), a cheaper lower bound.
_APGD = ("apgd-ce", "apgd-t")


def methods_config(*, quick: bool = False, epochs: int | None = None) -> dict:
    """The demo's digits setting (:func:`landscape.study.experiments.study_config`) plus the AutoAttack subset."""
    from .config import study_config

    cfg = study_config(quick=quick, epochs=epochs)
    cfg.update(aa_n=40 if quick else 200, aa_version="apgd" if quick else "standard")
    return cfg


# ------------------------------------------------------------------------------------------------- runs
def train_method(out: Path, variant: str, seed: int, cfg: dict, *, progress: bool = False) -> Path:
    """Train (or finish) one variant/seed into ``out/<variant>/s<seed>``; checkpoints of the first, best and
    last epoch are kept."""
    from .config import train_one

    return train_one(out, variant, seed, cfg, progress=progress, variants=METHOD_VARIANTS, save_every=cfg["epochs"])


def autoattack_run(folder: Path, seed: int, cfg: dict) -> dict:
    """``{"aa_best", "aa_last", "aa_n"}``: AutoAttack accuracy (%) of the best and last checkpoints on a fixed
    ``aa_n``-sample test subset (seeded by ``seed``), cached in ``<run>/autoattack.json``."""
    import torch

    from ..checkpoints import load_model
    from ..datasets import load_dataset
    from ..evaluate import autoattack_correct
    from ..training import checkpoint_path
    from .findings import log_best_epoch

    cache = folder / _AA_FILE
    key = dict(aa_n=cfg["aa_n"], aa_version=cfg["aa_version"], eps=cfg["eps"])
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if all(cached.get(k) == v for k, v in key.items()):
            return cached
    metrics = pd.read_csv(folder / "metrics.csv")
    epochs = dict(best=log_best_epoch(metrics), last=int(metrics["epoch"].max()))
    x, y = load_dataset("digits", "test")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:cfg["aa_n"]]
    x, y = x[idx].float(), y[idx]
    row = dict(key)
    for tag, epoch in epochs.items():
        model = load_model(checkpoint_path(folder, epoch), "mlp", hidden=tuple(cfg["hidden"]))
        kw = dict(version="custom", attacks=list(_APGD)) if cfg["aa_version"] == "apgd" else \
            dict(version=cfg["aa_version"])
        correct = autoattack_correct(model, x, y, eps=cfg["eps"], seed=seed, **kw)
        row[f"aa_{tag}"] = 100 * float(correct.float().mean())
    atomic_write_text(cache, json.dumps(row, sort_keys=True))
    return row


def run_job(out: Path, variant: str, seed: int, cfg: dict, *, progress: bool = False, threads: int = 1) -> dict:
    """Train one run, then AutoAttack its best and last checkpoints; returns the timings (s)."""
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    folder = train_method(out, variant, seed, cfg, progress=progress)
    t1 = time.perf_counter()
    if cfg["aa_n"] > 0:
        autoattack_run(folder, seed, cfg)
    return dict(variant=variant, seed=seed, train_s=t1 - t0, aa_s=time.perf_counter() - t1)


def _run_all(out: Path, runs: list[tuple[str, int]], cfg: dict, *, jobs: int, progress: bool) -> list[dict]:
    if jobs == 1 or len(runs) == 1:
        return [run_job(out, v, s, cfg, progress=progress) for v, s in runs]
    from joblib import Parallel, delayed

    from .._progress import tqdm

    pool = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")
    results = pool(delayed(run_job)(out, v, s, cfg) for v, s in runs)
    return list(tqdm(results, total=len(runs), desc=f"runs ({jobs} processes)", unit="run", disable=not progress))


def runs_table(out: Path, variants, seeds) -> pd.DataFrame:
    """One row per finished run: ``variant, seed, best_epoch, best, last, gap, clean_last[, aa_best, aa_last]``."""
    rows = []
    for v in variants:
        for s in seeds:
            folder = run_dir(out, v, s)
            if not (folder / "metrics.csv").is_file():
                continue
            row = dict(variant=v, seed=s, **run_summary(folder))
            if (folder / _AA_FILE).is_file():
                aa = json.loads((folder / _AA_FILE).read_text())
                row.update(aa_best=aa.get("aa_best", math.nan), aa_last=aa.get("aa_last", math.nan))
            rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- claims
COMPARISON_COLUMNS = ["peer", "metric", "advlc", "peer_value", "diff", "se", "n", "mde", "holds"]


def comparison_table(runs: pd.DataFrame, *, reference: str = "at_advlc", peers=PEERS,
                     metrics=tuple(METRICS)) -> pd.DataFrame:
    """Paired AdvLC − peer differences per metric (module docstring): columns :data:`COMPARISON_COLUMNS`
    (``advlc``/``peer_value`` the means over the paired seeds, ``mde = 2·se``)."""
    rows = []
    for peer in peers:
        for metric in metrics:
            if runs.empty or metric not in runs:
                a = b = pd.Series(dtype=float)
            else:
                a = runs[runs["variant"] == reference].set_index("seed")[metric]
                b = runs[runs["variant"] == peer].set_index("seed")[metric]
            d = (a - b).dropna()
            diff, se, n = mean_se(d)
            rows.append(dict(peer=peer, metric=metric, advlc=float(a[d.index].mean()) if n else math.nan,
                             peer_value=float(b[d.index].mean()) if n else math.nan, diff=diff, se=se, n=n,
                             mde=K_SE * se, holds=verdict(diff, se, sign=1, n=n)))
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _overall(holds: list[str]) -> str:
    if holds and all(h == "yes" for h in holds):
        return "yes"
    return "no" if "no" in holds else "inconclusive"


def robustness_claim(runs: pd.DataFrame, *, peers=PEERS, metrics=tuple(METRICS)) -> pd.DataFrame:
    """Claims rows (:data:`landscape.study.claims.CLAIM_COLUMNS`), one per metric measured: "AdvLC gives the
    highest robustness among similar methods" — ``value`` the smallest AdvLC − peer difference (points), the
    evidence lists every paired difference ± se, the seed count and the minimal detectable effect."""
    table = comparison_table(runs, peers=peers, metrics=metrics)
    rows = []
    for metric in metrics:
        t = table[(table["metric"] == metric) & (table["n"] > 0)]
        if t.empty:
            continue
        parts = [f"{r.peer} {pm(r.diff, r.se, 1)}" for r in t.itertuples()]
        worst = t.loc[t["diff"].idxmin()]
        n, mde = int(t["n"].min()), float(t["mde"].max())
        missing = [p for p in peers if p not in set(t["peer"])]
        text = (f"{METRICS[metric]} test accuracy, AdvLC − peer, paired over {n} seed(s) (points ± se): "
                f"{'; '.join(parts)}; resolvable effect (2·se) up to {pm(mde, digits=1)} points"
                + (f"; not trained: {', '.join(missing)}" if missing else ""))
        rows.append(dict(claim=f"4. AdvLC gives the highest robustness among similar methods ({METRICS[metric]})",
                         evidence=text, value=round(float(worst["diff"]), 6) + 0.0,
                         holds=_overall(list(t["holds"])) if not missing else
                         ("no" if "no" in set(t["holds"]) else "inconclusive")))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def efficiency_claim(bench: pd.DataFrame | None, *, peers=REGULARISERS) -> pd.DataFrame:
    """Claims row "AdvLC costs less than the other landscape regularisers at equal PGD steps" from the
    benchmarks/bench_methods.py table (``method, vs_pgd_at, vs_pgd_at_sd, repeats`` per device): ``value`` the
    smallest peer − AdvLC cost difference (in PGD-AT epochs), verdict per peer from the round spread."""
    claim = "AdvLC costs less than the other landscape regularisers at equal PGD steps"
    if bench is None or bench.empty or "at_advlc" not in set(bench["method"]):
        return pd.DataFrame([dict(claim=claim, evidence="not measured (run benchmarks/bench_methods.py)",
                                  value=math.nan, holds="inconclusive")], columns=CLAIM_COLUMNS)
    rows = []
    for device, g in bench.groupby("device", sort=False):
        r = g.set_index("method")
        a = r.loc["at_advlc"]
        parts, holds, diffs = [], [], []
        for p in peers:
            if p not in r.index:
                continue
            n = int(min(a.get("repeats", 1), r.loc[p].get("repeats", 1)))
            se = math.sqrt((a.get("vs_pgd_at_sd", math.nan) ** 2 + r.loc[p].get("vs_pgd_at_sd", math.nan) ** 2) / n)
            d = float(r.loc[p, "vs_pgd_at"] - a["vs_pgd_at"])
            parts.append(f"{p} {r.loc[p, 'vs_pgd_at']:.2f}x")
            holds.append(verdict(d, se, sign=1, n=n))
            diffs.append(d)
        context = [f"{p} {r.loc[p, 'vs_pgd_at']:.2f}x" for p in NO_INNER_STEPS if p in r.index]
        text = (f"epoch wall time / PGD-AT's, same {int(a.get('steps', 0))} inner steps, {device}: AdvLC "
                f"{a['vs_pgd_at']:.2f}x vs {', '.join(parts)} (median of {int(a.get('repeats', 1))} interleaved "
                f"rounds; forward passes per batch AdvLC {a.get('forwards', math.nan):.0f})"
                + (f"; without inner steps (not at equal PGD steps): {', '.join(context)}" if context else ""))
        rows.append(dict(claim=claim, evidence=text, value=round(min(diffs), 6) + 0.0 if diffs else math.nan,
                         holds=_overall(holds)))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def comparison_markdown(table: pd.DataFrame) -> str:
    """Markdown of :func:`comparison_table`."""
    lines = ["| peer | metric | AdvLC (%) | peer (%) | AdvLC − peer (points) | seeds | MDE (2·se) | holds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.peer} | {METRICS[r.metric]} | {pm(r.advlc)} | {pm(r.peer_value)} | {pm(r.diff, r.se)} "
                     f"| {r.n} | {pm(r.mde)} | {r.holds} |")
    return "\n".join(lines) + "\n"


def summary_markdown(runs: pd.DataFrame) -> str:
    """Mean ± sd per variant of the robustness metrics and the best epoch."""
    cols = [c for c in ("best", "best_epoch", "last", "gap", "clean_last", "aa_best", "aa_last") if c in runs]
    lines = ["| variant | seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for v, g in runs.groupby("variant", sort=False):
        cells = [pm(g[c].mean(), g[c].std(ddof=1), 0 if c == "best_epoch" else 1) for c in cols]
        lines.append(f"| {v} | {len(g)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- main
DOC_BEGIN, DOC_END = "<!-- methods-study:begin (landscape.study.methods) -->", "<!-- methods-study:end -->"


def _write_doc(doc: Path, block: str) -> None:
    """Replace the text between :data:`DOC_BEGIN` and :data:`DOC_END` of ``doc`` by ``block``."""
    text = doc.read_text()
    if DOC_BEGIN not in text or DOC_END not in text:
        raise SystemExit(f"{doc} has no {DOC_BEGIN} ... {DOC_END} block")
    head, rest = text.split(DOC_BEGIN, 1)
    atomic_write_text(doc, f"{head}{DOC_BEGIN}\n{block}{DOC_END}{rest.split(DOC_END, 1)[1]}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m landscape.study --study methods", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/methods")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0..4 (0 1 with --quick)")
    p.add_argument("--methods", nargs="+", default=["at_advlc", *PEERS], choices=list(METHOD_VARIANTS))
    p.add_argument("--epochs", type=int, default=None, help="default 150 (6 with --quick)")
    p.add_argument("--aa-n", type=int, default=None, help="AutoAttack test samples per checkpoint (0: none; "
                   "default 200, 40 with --quick)")
    p.add_argument("--aa-version", choices=["standard", "apgd"], default=None,
                   help="standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; default) or apgd (APGD-CE + APGD-T "
                        "only, about 4x cheaper on the digits MLP; default with --quick)")
    p.add_argument("--bench", default="benchmarks/results/methods_cpu.csv",
                   help="cost table of benchmarks/bench_methods.py for the efficiency row")
    p.add_argument("--doc", default=None, metavar="FILE",
                   help="also write the claims and paired differences between the methods-study markers of FILE "
                        "(e.g. docs/training.md)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = methods_config(quick=args.quick, epochs=args.epochs)
    if args.aa_n is not None:
        cfg["aa_n"] = max(0, args.aa_n)
    if args.aa_version is not None:
        cfg["aa_version"] = args.aa_version
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda *a, **k: None) if args.quiet else print
    runs = [(v, s) for s in args.seeds for v in args.methods]
    log(f"methods comparison on digits: {len(runs)} run(s) of {cfg['epochs']} epochs, AutoAttack on "
        f"{cfg['aa_n']} test samples, {args.jobs} process(es) -> {out}")
    t0 = time.perf_counter()
    timings = _run_all(out, runs, cfg, jobs=args.jobs, progress=not args.quiet)
    per_run = runs_table(out, args.methods, args.seeds)
    peers = [m for m in args.methods if m != "at_advlc"]
    table = comparison_table(per_run, peers=peers)
    bench = pd.read_csv(args.bench) if Path(args.bench).is_file() else None
    claims = pd.concat([robustness_claim(per_run, peers=peers), efficiency_claim(bench)], ignore_index=True)
    write_file(out / "methods_runs.csv", per_run)
    write_file(out / "methods_comparison.csv", table)
    write_file(out / "methods_claims.csv", claims)
    total = time.perf_counter() - t0
    write_file(out / "methods_timings.csv", pd.DataFrame(timings))
    atomic_write_text(out / "methods.md",
        f"# AdvLC against similar methods (digits, {cfg['epochs']} epochs, seeds "
        f"{' '.join(map(str, args.seeds))}, {total:.0f} s)\n\n## Claims\n\n{claims_markdown(claims)}\n"
        f"## Paired differences\n\n{comparison_markdown(table)}\n## Per method (mean ± sd over seeds)\n\n"
        f"{summary_markdown(per_run)}")
    if args.doc:
        _write_doc(Path(args.doc), f"Digits, {cfg['epochs']} epochs, seeds {' '.join(map(str, args.seeds))}, "
                   f"AutoAttack {cfg['aa_version']} on {cfg['aa_n']} test samples:\n\n{claims_markdown(claims)}\n"
                   f"{comparison_markdown(table)}\n{summary_markdown(per_run)}")
    log(claims_markdown(claims))
    log(f"methods study: {total:.0f} s -> {out / 'methods.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
