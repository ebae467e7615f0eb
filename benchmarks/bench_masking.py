"""The sanity flags of ``landscape evaluate`` on deliberately masked and on honest digits models, measured.

Builds, with fixed seeds, the models of the tables of docs/evaluation.md and runs
``landscape.evaluate.evaluate_model(..., checks=True)`` (accuracies and :func:`landscape.masking.masking_checks`)
on each:

* ``masked`` rows: a softplus MLP (32 hidden units) trained for 100 clean full-batch SGD steps on the digits
  train split (seed 0), and five wrappers of that same network that mask gradients on purpose: input quantised
  ``round(4x)/4``; softmax output; log-softmax output; Gaussian input noise σ = 0.05 in eval mode; a NaN input
  gradient (the ``torch.where`` trap: finite outputs, ``sqrt(-x)`` in the unselected branch poisons backward).
  60 test samples, eps = 0.1, Square on 50 samples with 300 queries (the settings of tests/test_masking.py).
* ``at`` rows: honest PGD-trained MLPs (64 hidden units, softplus and ReLU; 150 full-batch SGD steps on 5-step
  PGD points of the train split, seed 0), one per eps in 0.05 / 0.1 / 0.2, evaluated at their training eps on
  100 test samples, Square on 50 samples with 300 queries.

One CSV row per (model, eps), with the machine, torch version and commit. ``--doc FILE`` rewrites the
``masking`` and ``masking-at`` generated blocks of that file from the CSV(s) given with ``--from-csv`` (no
measurement then); tests/test_docblocks.py checks the committed blocks against the committed CSV.

    python benchmarks/bench_masking.py --out benchmarks/results/masking_cpu.csv
    python benchmarks/bench_masking.py --from-csv benchmarks/results/masking_cpu.csv --doc docs/evaluation.md
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape import create_model
from landscape.testing import NanGrad, Noisy, Quantised, Softmax, clean_trained_mlp
from landscape.attacks import pgd
from landscape.datasets import load_dataset
from landscape.evaluate import evaluate_model
from landscape.masking import FLAGS

from bench_units import add_doc_options, doc_from_csvs, write_csv  # noqa: E402 (benchmarks/ is on sys.path as a script)

CSV = Path(__file__).parent / "results" / "masking_cpu.csv"
COMMAND = "python benchmarks/bench_masking.py --from-csv benchmarks/results/masking_cpu.csv --doc docs/evaluation.md"
MARKERS = {name: (f"<!-- BEGIN generated:{name} -->", f"<!-- END generated:{name} -->")
           for name in ("masking", "masking-at")}

SEED = 0
MASKED = dict(eps=0.1, n=60, hidden=(32,), activation="softplus", train_steps=100)
AT = dict(eps=(0.05, 0.1, 0.2), n=100, hidden=(64,), activations=("softplus", "relu"), train_steps=150,
          pgd_steps=5)
SQUARE = dict(square_n=50, square_queries=300)
LR, MOMENTUM = 0.5, 0.9


# ------------------------------------------------------------------------------------- the models

def _new_mlp(hidden, activation: str) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return create_model("mlp", hidden=tuple(hidden), activation=activation)


def clean_mlp(x_tr, y_tr) -> nn.Module:
    """The honest clean-trained softplus MLP (as tests/test_masking.py trains it)."""
    return clean_trained_mlp(x_tr, y_tr, hidden=MASKED["hidden"], activation=MASKED["activation"],
                             steps=MASKED["train_steps"], lr=LR, momentum=MOMENTUM, seed=SEED)


def pgd_at_mlp(x_tr, y_tr, *, eps: float, activation: str) -> nn.Module:
    """An honest PGD-AT MLP: every full-batch step trains on 5-step PGD points (random start, step 2.5·eps/5)."""
    model = _new_mlp(AT["hidden"], activation)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for step in range(AT["train_steps"]):
        x_adv, _ = pgd(model, x_tr, y_tr, eps, steps=AT["pgd_steps"], random_start=True, seed=step)
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x_adv), y_tr).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


# ------------------------------------------------------------------------------------- the run

def _commit() -> str:
    """The short commit measured, ``+dirty`` when tracked files differ from it ("" outside a git checkout)."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent,
                              check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return ""


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _row(table: str, model_name: str, model: nn.Module, x, y, *, eps: float, train: dict) -> dict:
    t0 = time.perf_counter()
    r = evaluate_model(model, x, y, eps=eps, checks=True, check_n=int(x.shape[0]), seed=SEED, **SQUARE)
    seconds = time.perf_counter() - t0
    flags = [name for name, f in FLAGS.items() if r[f.column]]
    print(f"{table:6s} {model_name:40s} eps {eps:<5g} clean {r['acc_clean']:.3f} pgd {r['acc_pgd']:.3f} "
          f"flags {','.join(flags) or 'none'} ({seconds:.1f} s)", flush=True)
    return {"table": table, "model": model_name, **train, **r, "flags": " ".join(flags), "eval_s": seconds}


def run() -> pd.DataFrame:
    torch.manual_seed(SEED)
    x_tr, y_tr = load_dataset("digits", "train")
    rows = []
    t0 = time.perf_counter()
    net = clean_mlp(x_tr, y_tr)
    x, y = load_dataset("digits", "test", n=MASKED["n"])
    train = {"hidden": "x".join(map(str, MASKED["hidden"])), "activation": MASKED["activation"],
             "training": "clean", "train_steps": MASKED["train_steps"], "train_eps": 0.0}
    for name, model in (("honest MLP", net),
                        ("input quantised, `round(4x)/4`", Quantised(net)),
                        ("softmax output", Softmax(net)),
                        ("log-softmax output", Softmax(net, log=True)),
                        ("Gaussian input noise σ = 0.05 in eval", Noisy(net, 0.05)),
                        ("NaN input gradient (`torch.where` trap)", NanGrad(net))):
        rows.append(_row("masked", name, model, x, y, eps=MASKED["eps"], train=train))
    x, y = load_dataset("digits", "test", n=AT["n"])
    for activation in AT["activations"]:
        for eps in AT["eps"]:
            model = pgd_at_mlp(x_tr, y_tr, eps=eps, activation=activation)
            train = {"hidden": "x".join(map(str, AT["hidden"])), "activation": activation, "training": "pgd_at",
                     "train_steps": AT["train_steps"], "train_eps": eps, "train_pgd_steps": AT["pgd_steps"]}
            name = f"PGD-AT {'ReLU' if activation == 'relu' else activation} MLP"
            rows.append(_row("at", name, model, x, y, eps=eps, train=train))
    total = time.perf_counter() - t0
    df = pd.DataFrame(rows)
    meta = {"cpu": _cpu(), "threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "load_1min": round(os.getloadavg()[0], 1), "python": platform.python_version(),
            "torch": torch.__version__, "commit": _commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "total_s": round(total, 1)}
    return df.assign(**meta)


# ------------------------------------------------------------------------------------- the Markdown blocks

def _pct(v: float, digits: int = 1) -> str:
    return "NaN" if math.isnan(v) else f"{100 * v:.{digits}f}%"


def _num(v: float) -> str:
    """A measured number to two significant digits (trailing zeros kept; whole numbers from 10 on), 0 as 0."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if v == 0:
        return "0"
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:#.2g}"


def _flags(r) -> str:
    return ", ".join(str(r["flags"]).split()) if isinstance(r["flags"], str) and r["flags"].strip() else "none"


def _provenance(df: pd.DataFrame, short: bool = False) -> str:
    r = df.iloc[0]
    if short:
        return (f"Same run and CSV as the table above ({r['date']}, torch {r['torch']}, code {r['commit']}); "
                f"regenerate with `{COMMAND}`.\n")
    return (f"Generated by `{COMMAND}` from `benchmarks/results/masking_cpu.csv` (the run of "
            f"`python benchmarks/bench_masking.py --out benchmarks/results/masking_cpu.csv`): {r['date']}, "
            f"{r['cpu']}, {int(r['threads'])} threads (1-min load {r['load_1min']}), Python {r['python']}, "
            f"torch {r['torch']}, code {r['commit']}; the whole run took {float(r['total_s']):.0f} s.\n")


def masking_markdown(df: pd.DataFrame) -> str:
    """The table of the deliberately masked models and the honest MLP they wrap."""
    m = df[df["table"] == "masked"]
    head = ["model", "clean", "FGSM", "PGD", "zero grad", "rand diff", "prob / logprob rows",
            "white-box / Square (subset)", "taylor ratio", "fo_share median", "flags"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in m.to_dict("records"):
        nan = float(r["nan_grad_frac"]) > 0
        star = "*" if nan else ""  # attacked inputs are NaN: explained under the table
        grad = _num(float(r["zero_grad_frac"]) + float(r["nan_grad_frac"])) + (" (NaN)" if nan else "")
        square = f"{_pct(r['acc_whitebox_sub'], 0)} / {_pct(r['acc_square'], 0)}"
        if r["flag_square"]:
            square += f" (gap {float(r['square_gap']):.2f} > {float(r['square_margin']):.3f})"
        lines.append("| " + " | ".join([
            r["model"], _pct(r["acc_clean"]), _pct(r["acc_fgsm"]) + star, _pct(r["acc_pgd"]) + star, grad,
            _num(r["rand_max_diff"]), f"{_num(r['prob_frac'])} / {_num(r['logprob_frac'])}", square,
            _num(r["taylor_ratio"]), _num(r["fo_share_median"]), _flags(r)]) + " |")
    return "\n".join(lines) + "\n\n" + _provenance(df)


def at_markdown(df: pd.DataFrame) -> str:
    """The table of the honest PGD-trained MLPs, one row per activation, the eps values side by side."""
    at = df[df["table"] == "at"]
    head = ["model", "eps", "white-box (subset)", "Square (subset)", "taylor ratio",
            "fo_share median", "flags"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, g in at.groupby("model", sort=False):
        g = g.sort_values("eps")
        flags = [_flags(r) for r in g.to_dict("records")]

        def cells(col, fmt, g=g):
            return " / ".join(fmt(v) for v in g[col])

        lines.append("| " + " | ".join([
            name, " / ".join(f"{v:g}" for v in g["eps"]),
            cells("acc_whitebox_sub", lambda v: _pct(v, 0)), cells("acc_square", lambda v: _pct(v, 0)),
            cells("taylor_ratio", _num), cells("fo_share_median", _num),
            "none" if all(f == "none" for f in flags) else " / ".join(flags)]) + " |")
    return "\n".join(lines) + "\n\n" + _provenance(df, short=True)


BLOCKS = {"masking": masking_markdown, "masking-at": at_markdown}


def render_blocks(csvs) -> dict[str, str]:
    """Every generated block's text, from the result CSV(s)."""
    df = pd.concat([pd.read_csv(f) for f in csvs], ignore_index=True)
    return {name: fn(df) for name, fn in BLOCKS.items()}


def stale_blocks(doc: str | Path, csvs=(CSV,)) -> list[str]:
    """The names of the generated blocks of ``doc`` whose text differs from what ``csvs`` render (or are missing)."""
    text = Path(doc).read_text()
    stale = []
    for name, block in render_blocks(csvs).items():
        begin, end = MARKERS[name]
        m = re.search(re.escape(begin) + r"\n(.*?)" + re.escape(end), text, re.S)
        if m is None or m.group(1) != block:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write the table as CSV here")
    add_doc_options(p, "masking and masking-at")
    args = p.parse_args(argv)
    if args.from_csv:
        for name, fn in BLOCKS.items():
            doc_from_csvs(args.from_csv, fn, args.doc, *MARKERS[name])
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    df = run()
    write_csv(df, args.out)
    for fn in BLOCKS.values():
        print(fn(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
