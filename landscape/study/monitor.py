"""The monitor's study: train the demo runs with a :class:`~landscape.monitor.Monitor` attached and evaluate the
early warning against the full per-epoch evaluation (``metrics.csv``).

* :func:`monitor_for` is what the demo calls to attach a monitor to one training run:
  ``train(..., on_epoch=monitor_for(folder, seed, cfg))`` writes ``folder/monitor`` (a run folder) every epoch.
  The probe is held out: ``probe_n`` samples of the digits *train* split that the run does not train on (clean
  labels), never the test samples the official evaluation scores.
* :func:`collect` trains variants × seeds that way (joblib, at most 2 jobs);
* :func:`evaluate_warnings` replays the early-warning rule and the patience baseline on each run's monitor table
  (the rules see only the epochs up to the current one, so the replay is what the live monitor decided) and
  scores them against the official best epoch of the full evaluation: ``monitor_eval.csv``;
* :func:`warning_markdown` renders that table for ``docs/monitor.md``.

``python -m landscape.study.monitor --out DIR [--seeds 0 1 2 3 4 5] [--jobs 2]`` trains and evaluates;
``--evaluate-only`` re-scores a folder of finished runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..runs import run_file, write_file
from .config import DEFAULT_VARIANTS, study_config, train_one
from .findings import run_dir

__all__ = [
    "EVAL_FILE",
    "MONITOR_FOLDER",
    "NOT_OVERFITTING",
    "OVERFITTING",
    "collect",
    "default_rules",
    "evaluate_run",
    "evaluate_warnings",
    "leads_markdown",
    "main",
    "monitor_for",
    "probe_for",
    "rule_markdown",
    "signal_leads",
    "train_monitored",
    "tune_rule",
    "warning_markdown",
    "warning_summary",
    "write_doc",
]

#: variants that robust-overfit in the demo (the warning should fire near their best epoch).
OVERFITTING = ("pgd_at", "standard", "standard_gradreg")
#: variants that do not (a warning there is a false alarm).
NOT_OVERFITTING = ("at_clean_half", "at_advlc", "at_gradreg")
#: the monitor's run folder inside each training run's folder.
MONITOR_FOLDER = "monitor"
#: the evaluation table written into the study folder.
EVAL_FILE = "monitor_eval.csv"
#: the signal-lead table written beside it.
LEADS_FILE = "monitor_leads.csv"
#: probe samples per run in the study (held-out digits train samples).
PROBE_N = 128


def probe_for(seed: int, cfg: dict, n: int = PROBE_N):
    """``(x, y)``: ``n`` digits train samples (stratified, seeded) that the run of ``seed`` does not train on."""
    import torch

    from ..datasets import Subset, materialize, open_dataset, stratified_indices

    ds = open_dataset("digits", "train")
    used = set(stratified_indices(ds.targets, cfg["train_n"], seed).tolist())
    rest = np.array([i for i in range(len(ds)) if i not in used], dtype=np.int64)
    pick = rest[stratified_indices(ds.targets[rest], min(n, len(rest)), seed + 1_000_003)]
    x, y = materialize(Subset(ds, pick.tolist()), workers=0)
    return x, y.to(torch.int64)


def monitor_for(folder: str | Path, seed: int, cfg: dict, *, n: int = PROBE_N, **monitor_kw: Any):
    """The ``on_epoch`` callback that attaches a :class:`~landscape.monitor.Monitor` to one demo training run.

    The monitor is built at the first epoch (from the model ``train`` passes) and writes ``folder/monitor``; a
    resumed run continues that folder. ``on_epoch.close()`` closes it (writes its ``diagnosis.json``):
    :func:`landscape.study.config.train_one` calls it when training ends, however it ends. ``monitor_kw`` go to :class:`~landscape.monitor.Monitor` (default: every
    epoch, the default measures and rule, ``eps=cfg["eps"]``, ``seed=seed``, no per-sample rows).
    """
    from ..monitor import Monitor

    state: dict[str, Any] = {}
    out = Path(folder) / MONITOR_FOLDER

    def on_epoch(epoch, model, optimizer=None):
        if "mon" not in state:
            kw = dict(eps=cfg["eps"], seed=seed, n=None, run=f"{Path(folder).parent.name}/{Path(folder).name}")
            kw.update(monitor_kw)
            state["mon"] = Monitor(model, probe_for(seed, cfg, n), out=out, **kw)
        return state["mon"].callback(epoch, model, optimizer)

    def close() -> None:
        if "mon" in state:
            state["mon"].close()

    on_epoch.state = state
    on_epoch.close = close
    return on_epoch


def train_monitored(out: Path, variant: str, seed: int, cfg: dict, *, monitor: bool = True,
                    progress: bool = False) -> Path:
    """Train one demo run (as :func:`landscape.study.experiments.train_one`) with the monitor attached."""
    import torch

    torch.set_num_threads(1)
    folder = run_dir(out, variant, seed)
    t0 = time.perf_counter()
    train_one(out, variant, seed, cfg, progress=progress,
              on_epoch=monitor_for(folder, seed, cfg, samples=True) if monitor else None)
    (folder / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.3f}\n")
    return folder


def collect(out: str | Path, variants=DEFAULT_VARIANTS, seeds=(0, 1, 2, 3, 4, 5), cfg: dict | None = None, *,
            jobs: int = 2) -> list[Path]:
    """Train every (variant, seed) with the monitor into ``out/<variant>/s<seed>`` (finished runs are skipped)."""
    from joblib import Parallel, delayed

    cfg = cfg or study_config()
    todo = [(v, s) for s in seeds for v in variants
            if not _finished(run_dir(Path(out), v, s), cfg["epochs"])]
    Parallel(n_jobs=max(1, min(2, jobs)))(delayed(train_monitored)(Path(out), v, s, cfg) for v, s in todo)
    return [run_dir(Path(out), v, s) for s in seeds for v in variants]


def _finished(folder: Path, epochs: int) -> bool:
    traj = folder / MONITOR_FOLDER / run_file("trajectory")
    if not traj.is_file() or not (folder / run_file("metrics")).is_file():
        return False
    return int(pd.read_parquet(traj, columns=["epoch"])["epoch"].max()) >= epochs


# ------------------------------------------------------------------------------------------- evaluation
def _test_curve(table: pd.DataFrame) -> pd.DataFrame:
    t = table[(table["split"] == "test")]
    if "error" in t.columns:
        t = t[t["error"].isna()]
    return t.sort_values("epoch").reset_index(drop=True)


def _acc_at(full: pd.DataFrame, epoch) -> float:
    if epoch is None or (isinstance(epoch, float) and math.isnan(epoch)):
        return float("nan")
    row = full[full["epoch"] == int(epoch)]
    return float(row["acc_adv"].iloc[0]) if len(row) else float("nan")


def _probe_best(curve: pd.DataFrame, upto: int | None) -> int:
    """The checkpoint ``keep_best=True`` holds at epoch ``upto`` (None: the end): the probe's official best."""
    from ..diagnose import best_index

    part = curve if upto is None else curve[curve["epoch"] <= upto]
    return int(part["epoch"].iloc[best_index(part["acc_adv"].to_numpy(dtype=float))])


def default_rules() -> dict[str, Any]:
    """The rules the evaluation compares: the landscape rule (default), the same without the landscape check,
    and the patience baseline at several k (the same probe: same samples, same epochs)."""
    from ..monitor import DEFAULT_RULE, PatienceRule

    rules: dict[str, Any] = {"landscape": DEFAULT_RULE,
                             "loss_only": dataclasses.replace(DEFAULT_RULE, confirm=False)}
    for k in (5, 10, 15, 20):
        rules[f"patience_{k}"] = PatienceRule(k)
    return rules


def evaluate_run(folder: str | Path, rules: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per rule for one run folder (``metrics.csv`` + ``monitor/``); see :func:`evaluate_warnings`."""
    return score_run(load_run(folder), rules or default_rules())


def load_run(folder: str | Path) -> dict[str, Any]:
    """A run's full test evaluation (``metrics.csv``) and its monitor's test curve, read once."""
    folder = Path(folder)
    log = pd.read_csv(folder / run_file("metrics"))
    full = log[log["split"] == "test"].sort_values("epoch").reset_index(drop=True)
    curve = _test_curve(pd.read_parquet(folder / MONITOR_FOLDER / run_file("trajectory")))
    return {"full": full, "curve": curve, "variant": folder.parent.name, "seed": folder.name}


def score_run(run: dict[str, Any], rules: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`evaluate_run` on a run read by :func:`load_run`."""
    from ..diagnose import best_index
    from ..monitor import replay

    full, curve, variant, seed = run["full"], run["curve"], run["variant"], run["seed"]
    epochs = int(full["epoch"].max())
    best = int(full["epoch"].iloc[best_index(full["acc_adv"].to_numpy(dtype=float))])
    best_acc = float(full.loc[full["epoch"] == best, "acc_adv"].iloc[0])
    rows = []
    for name, rule in rules.items():
        event = replay(curve, rule)
        warn = None if event is None else int(event.epoch)
        kept = _probe_best(curve, warn)
        lag = None if warn is None else warn - best
        rows.append({
            "variant": variant, "seed": seed, "overfits": variant in OVERFITTING, "rule": name, "epochs": epochs,
            "best_epoch": best, "best_acc_adv": best_acc, "last_acc_adv": float(full["acc_adv"].iloc[-1]),
            "warn_epoch": warn, "est_best_epoch": None if event is None else int(event.best_epoch),
            "kept_epoch": kept, "lag": lag,
            "within_10pct": bool(lag is not None and 0 <= lag <= 0.1 * epochs),
            "lost_kept_pts": 100 * (best_acc - _acc_at(full, kept)),
            "lost_at_warning_pts": 100 * (best_acc - _acc_at(full, warn if warn is not None else epochs)),
            "epochs_saved": epochs - warn if warn is not None else 0,
            "false_alarm": bool(variant not in OVERFITTING and warn is not None),
        })
    return rows


def evaluate_warnings(out: str | Path, rules: dict[str, Any] | None = None, *, write: bool = True) -> pd.DataFrame:
    """Score the early warning on every run under ``out`` (``<variant>/s<seed>`` with ``metrics.csv`` and
    ``monitor/trajectory.parquet``); writes ``out/monitor_eval.csv``.

    Columns, one row per run and rule: ``variant, seed, overfits`` (a variant of :data:`OVERFITTING`), ``rule``,
    ``epochs``, ``best_epoch`` and ``best_acc_adv`` (official rule on the full per-epoch evaluation of
    ``metrics.csv``), ``last_acc_adv``, ``warn_epoch`` (None: no warning), ``est_best_epoch`` (the rule's
    estimate), ``kept_epoch`` (the checkpoint ``keep_best`` holds when training stops at the warning: the
    probe's best so far; at the end without a warning), ``lag`` (warning − best epoch), ``within_10pct``
    (0 <= lag <= 10 % of the epochs), ``lost_kept_pts`` (full-evaluation robust accuracy of the best epoch minus
    that of the kept checkpoint, in points), ``lost_at_warning_pts`` (minus that of the model at the warning),
    ``epochs_saved``, ``false_alarm`` (a warning on a variant that does not overfit).
    """
    rows = []
    for folder in sorted(Path(out).glob(f"*/s*/{MONITOR_FOLDER}/{run_file('trajectory')}")):
        run = folder.parent.parent
        if (run / run_file("metrics")).is_file():
            rows += evaluate_run(run, rules)
    table = pd.DataFrame(rows)
    if write and len(table):
        write_file(Path(out) / EVAL_FILE, table)
    return table


def warning_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per rule: overfitting runs warned within 10 % after the best epoch, worst and mean points lost (kept
    checkpoint), mean lag, epochs saved, and false alarms on the runs that do not overfit."""
    rows = []
    for rule, part in table.groupby("rule", sort=False):
        ro, ok = part[part["overfits"]], part[~part["overfits"]]
        rows.append({
            "rule": rule, "overfitting_runs": len(ro),
            "within_10pct": int(ro["within_10pct"].sum()),
            "missed": int(ro["warn_epoch"].isna().sum()),
            "median_lag": float(ro["lag"].median()) if ro["lag"].notna().any() else float("nan"),
            "max_lost_pts": float(ro["lost_kept_pts"].max()), "mean_lost_pts": float(ro["lost_kept_pts"].mean()),
            "runs_lost_le_1pt": int((ro["lost_kept_pts"] <= 1.0 + 1e-9).sum()),
            "mean_epochs_saved": float(ro["epochs_saved"].mean()),
            "other_runs": len(ok), "false_alarms": int(ok["false_alarm"].sum()),
            "false_alarm_lost_pts": float(ok.loc[ok["false_alarm"], "lost_kept_pts"].max())
            if ok["false_alarm"].any() else 0.0,
        })
    return pd.DataFrame(rows)


def _md(table: pd.DataFrame, floats: str = "{:.1f}") -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (float, np.floating)):
            return floats.format(v)
        return str(v)

    head = "| " + " | ".join(map(str, table.columns)) + " |"
    sep = "|" + "|".join("---" for _ in table.columns) + "|"
    return "\n".join([head, sep, *("| " + " | ".join(cell(v) for v in row) + " |"
                                   for row in table.itertuples(index=False))])


def warning_markdown(table: pd.DataFrame, rule: str = "landscape") -> str:
    """The summary over rules and the per-run table of ``rule`` and the patience baseline, as Markdown."""
    summary = warning_summary(table)
    base = table[table["rule"] == rule]
    wide = pd.DataFrame({"variant": base["variant"].to_numpy(), "seed": base["seed"].to_numpy(),
                         "best epoch": base["best_epoch"].to_numpy(),
                         "best acc (%)": 100 * base["best_acc_adv"].to_numpy(dtype=float)})
    for name in (rule, "patience_10"):
        part = table[table["rule"] == name].set_index(["variant", "seed"])
        key = list(zip(wide["variant"], wide["seed"]))
        wide[f"{name} warn"] = [part["warn_epoch"].get(k) for k in key]
        wide[f"{name} lag"] = [part["lag"].get(k) for k in key]
        wide[f"{name} lost (pts)"] = [part["lost_kept_pts"].get(k) for k in key]
    order = {v: i for i, v in enumerate([*OVERFITTING, *NOT_OVERFITTING])}
    wide = wide.sort_values(["variant", "seed"], key=lambda c: c.map(order) if c.name == "variant" else c)
    for c in wide.columns:
        if c.endswith(("warn", "lag")):
            wide[c] = pd.Series([None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                                 for v in wide[c]], index=wide.index, dtype=object)
    return (_md(summary, "{:.2f}") + "\n\nPer run (warning epoch, and robust accuracy lost by keeping the "
            "monitor's best checkpoint when stopping there):\n\n" + _md(wide))


def _lagged(signal: np.ndarray, loss: np.ndarray, lags) -> tuple[int, float, float]:
    """(best lag, correlation there, correlation at lag 0) of ``signal[t]`` with ``loss[t + lag]``."""
    best, best_r, r0 = 0, float("nan"), float("nan")
    for lag in lags:
        if abs(lag) >= len(signal) - 1:
            continue
        a = signal[:len(signal) - lag] if lag > 0 else signal[-lag:]
        b = loss[lag:] if lag > 0 else loss[:len(loss) + lag]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 10 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
            continue
        r = float(np.corrcoef(a[ok], b[ok])[0, 1])
        if lag == 0:
            r0 = r
        if not r <= best_r:
            best, best_r = lag, r
    return best, best_r, r0


def signal_leads(out: str | Path, window: int = 5, span: int = 5, max_lag: int = 15,
                 start: int = 10) -> pd.DataFrame:
    """Do the landscape signals lead the probe's robust loss? Per run, from the monitor's test curve:

    * ``turn_loss_adv``: the epoch of the smoothed (``window``-epoch trailing median) robust loss' minimum;
    * ``r_curv_growth_20``: the smoothed curvature 20 monitored epochs after that minimum over its value there
      (what the default rule's curvature check looks at);
    * ``rho_curv_before``/``rho_curv_after``: Spearman correlation of the smoothed curvature with the epoch
      before/after that minimum (near 1 on both sides: the curvature rises all along, it does not turn there);
      ``rho_fo_before``/``rho_fo_after`` the same for the first-order share;
    * ``lead_curv``, ``r_curv``, ``r0_curv``: the lag L in [-max_lag, max_lag] (epochs) maximising the
      correlation of the curvature's change over ``span`` epochs at t with the robust loss' change at t + L
      (from epoch ``start`` on), that correlation, and the one at L = 0; L > 0 means the curvature moves first;
      ``lead_fo``, ``r_fo``, ``r0_fo`` the same for the fall of the first-order share.
    """
    from ..diagnose import spearman
    from ..monitor.rules import smooth

    rows = []
    for path in sorted(Path(out).glob(f"*/s*/{MONITOR_FOLDER}/{run_file('trajectory')}")):
        run = path.parent.parent
        curve = _test_curve(pd.read_parquet(path))
        curve = curve[curve["epoch"] >= 1]
        ep = curve["epoch"].to_numpy()
        loss = smooth(curve["loss_adv"].to_numpy(dtype=float), window)
        curv = smooth(curve["curv_adv_mean"].to_numpy(dtype=float), window)
        fo = smooth(curve["fo_share_median"].to_numpy(dtype=float), window)
        low = int(np.nanargmin(loss))
        row: dict[str, Any] = {"variant": run.parent.name, "seed": run.name, "turn_loss_adv": int(ep[low]),
                               "r_curv_growth_20": float(curv[min(low + 20, len(ep) - 1)] / curv[low])
                               if curv[low] > 0 else float("nan")}
        for key, v in (("curv", curv), ("fo", fo)):
            row[f"rho_{key}_before"] = spearman(ep[:low + 1], v[:low + 1]) if low >= 3 else float("nan")
            row[f"rho_{key}_after"] = spearman(ep[low:], v[low:]) if len(ep) - low >= 4 else float("nan")

        def change(v, ep=ep):
            d = np.full(v.shape, np.nan)
            d[span:] = v[span:] - v[:-span]
            d[ep < start] = np.nan
            return d

        dloss = change(loss)
        for key, v, sign in (("curv", curv, 1.0), ("fo", fo, -1.0)):
            lag, r, r0 = _lagged(sign * change(v), dloss, range(-max_lag, max_lag + 1))
            row.update({f"lead_{key}": lag, f"r_{key}": r, f"r0_{key}": r0})
        rows.append(row)
    return pd.DataFrame(rows)


def tune_rule(out: str | Path, seeds=(0, 1, 2), grid: dict[str, list] | None = None) -> pd.DataFrame:
    """Grid search of :class:`~landscape.monitor.LandscapeRule`'s parameters on the runs of ``seeds`` only (the
    other seeds stay held out). Per parameter set: overfitting runs warned within 10 % after the best epoch
    (``within``), those also losing at most 1 point (``good``), false alarms, the worst loss and the median lag;
    sorted best first (fewest false alarms, then most ``within``, most ``good``, shortest lag)."""
    import itertools

    from ..monitor import LandscapeRule

    grid = grid or {"window": [3, 5, 7], "rise": [0.05, 0.08, 0.12, 0.2], "hold": [3, 5, 8],
                    "confirm": [True, False], "curv_growth": [1.1, 1.2, 1.3, 1.4, 1.6], "fo_drop": [0.03, 0.06, None]}
    folders = [p.parent.parent for p in sorted(Path(out).glob(f"*/s*/{MONITOR_FOLDER}/{run_file('trajectory')}"))
               if int(p.parent.parent.name[1:]) in set(seeds) and (p.parent.parent / run_file("metrics")).is_file()]
    loaded = [load_run(f) for f in folders]
    rows = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        if not params.get("confirm", True) and (params.get("curv_growth") != grid["curv_growth"][0]
                                                or params.get("fo_drop") != grid["fo_drop"][0]):
            continue  # without the landscape check those two do nothing
        rule = LandscapeRule(**params)
        runs = pd.DataFrame([r for run in loaded for r in score_run(run, {"x": rule})])
        ro, ok = runs[runs["overfits"]], runs[~runs["overfits"]]
        good = ro["within_10pct"] & (ro["lost_kept_pts"] <= 1.0 + 1e-9)
        rows.append({**params, "within": int(ro["within_10pct"].sum()), "good": int(good.sum()), "of": len(ro),
                     "false_alarms": int(ok["false_alarm"].sum()),
                     "max_lost": float(ro["lost_kept_pts"].max()), "median_lag": float(ro["lag"].median())})
    table = pd.DataFrame(rows)
    return table.sort_values(["false_alarms", "within", "good", "median_lag"],
                             ascending=[True, False, False, True]).reset_index(drop=True)


def rule_markdown(rule=None) -> str:
    """The default rule's parameters as a Markdown table."""
    from ..monitor import DEFAULT_RULE

    rule = rule or DEFAULT_RULE
    fields = dataclasses.fields(rule)
    return _md(pd.DataFrame([{f.name: getattr(rule, f.name) for f in fields}]), "{:g}") + "\n"


def write_doc(doc: str | Path, table: pd.DataFrame, leads: pd.DataFrame | None = None) -> Path:
    """Rewrite the ``monitor-eval`` (and ``monitor-leads``) generated blocks of ``doc`` from the tables."""
    from .docblocks import replace_blocks

    blocks = {"monitor-eval": warning_markdown(table) + "\n", "monitor-rule": rule_markdown()}
    if leads is not None and len(leads):
        blocks["monitor-leads"] = leads_markdown(leads) + "\n"
    path = Path(doc)
    path.write_text(replace_blocks(path.read_text(), blocks))
    return path


def leads_markdown(leads: pd.DataFrame) -> str:
    """Per variant: median turning epochs of the probe signals and how far the landscape signals lead the loss."""
    cols = [c for c in leads.columns if c.startswith(("turn_", "lead_", "rho_", "r_", "r0_"))]
    agg = leads.groupby("variant", sort=False)[cols].median().reset_index()
    order = {v: i for i, v in enumerate([*OVERFITTING, *NOT_OVERFITTING])}
    agg = agg.sort_values("variant", key=lambda c: c.map(order))
    return _md(agg, "{:.2f}")


def main(argv=None) -> int:  # pragma: no cover - thin CLI
    parser = argparse.ArgumentParser(prog="python -m landscape.study.monitor", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--evaluate-only", action="store_true", help="no training: score the runs in --out")
    parser.add_argument("--doc", default=None, help="rewrite the generated blocks of this Markdown file")
    parser.add_argument("--results", default=None, help="also copy the tables (CSV) into this folder")
    args = parser.parse_args(argv)
    if not args.evaluate_only:
        collect(args.out, args.variants, args.seeds, jobs=args.jobs)
    evaluate_warnings(args.out)
    write_file(Path(args.out) / LEADS_FILE, signal_leads(args.out))
    # render from the files as written, so the committed CSVs regenerate the same blocks
    table, leads = (pd.read_csv(Path(args.out) / f) for f in (EVAL_FILE, LEADS_FILE))
    if args.results:
        Path(args.results).mkdir(parents=True, exist_ok=True)
        write_file(Path(args.results) / EVAL_FILE, table)
        write_file(Path(args.results) / LEADS_FILE, leads)
    if args.doc:
        write_doc(args.doc, table, leads)
    print(warning_markdown(table))
    print()
    print(leads_markdown(leads))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
