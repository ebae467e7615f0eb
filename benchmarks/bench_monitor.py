"""Overhead of the training-time Monitor per adversarial-training epoch, side by side with training alone.

The demo's setting (PGD-AT of the MLP on 300 digits with 20 % label noise, PGD-7 training attack, PGD-10
evaluation of 300 + 300 samples every epoch) is trained for ``--epochs`` epochs without a monitor and with one
at ``every=1`` (and ``every=5``) for each probe size, interleaved round-robin for ``--repeats`` rounds (one torch
thread). An epoch's time is the **CPU time** of the process between two consecutive ``on_epoch`` calls (training,
evaluation, saving and, with a monitor, its step), the mean over the epochs after the first two and over the
rounds: CPU time, not wall time, because the benchmark machine is shared and its wall times swing with the
load; with one thread the two agree on an idle machine. Rows: ``probe_n``
(0 = no monitor), ``every``, ``epoch_s``, ``step_s`` (the monitor's own median step, CPU time), ``overhead_pct``
((epoch with − epoch without) / epoch without), ``step_pct`` (step_s / epoch without).

The goal (issue 24): at most 5 % per epoch at ``every=1`` with the default probe size.

    python benchmarks/bench_monitor.py --out benchmarks/results/monitor_cpu.csv
    python benchmarks/bench_monitor.py --from-csv benchmarks/results/monitor_cpu.csv --doc docs/monitor.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from bench_units import add_doc_options, doc_from_csvs, write_csv

BEGIN, END = "<!-- monitor-cost:begin (benchmarks/bench_monitor.py --doc) -->", "<!-- monitor-cost:end -->"


def one_run(probe_n: int, every: int, epochs: int, folder: Path) -> tuple[list[float], list[float]]:
    """(epoch wall times, monitor step times) of one training run."""
    from landscape.datasets import load_dataset
    from landscape.monitor import Monitor
    from landscape.study.experiments import study_config
    from landscape.study.monitor import probe_for
    from landscape.training import seeded_model, train

    cfg = study_config()
    model = seeded_model("mlp", 0, hidden=tuple(cfg["hidden"]))
    data = (load_dataset("digits", "train", n=cfg["train_n"], seed=0), load_dataset("digits", "test"))
    mon = Monitor(model, probe_for(0, cfg, probe_n), eps=cfg["eps"], out=folder / "monitor", n=None,
                  every=every) if probe_n else None
    stamps: list[float] = []
    steps: list[float] = []

    def on_epoch(epoch, m, opt):
        if mon is not None:
            t0 = time.process_time()
            mon.callback(epoch, m, opt)
            if epoch % every == 0:
                steps.append(time.process_time() - t0)
        stamps.append(time.process_time())

    train(model, data, method="pgd_at", eps=cfg["eps"], steps=cfg["steps"], epochs=epochs, lr=cfg["lr"],
          momentum=cfg["momentum"], weight_decay=cfg["weight_decay"], batch_size=cfg["batch_size"],
          label_noise=cfg["label_noise"], seed=0, eval_n=cfg["eval_n"], eval_steps=cfg["eval_steps"],
          save_every=cfg["every"], out_dir=folder / "run", progress=False, on_epoch=on_epoch)
    times = [b - a for a, b in zip(stamps, stamps[1:])][1:]  # the first epochs warm up
    return times, (steps[1:] or steps)


def measure(sizes, every_values, epochs: int, repeats: int) -> pd.DataFrame:
    configs = [(0, 1)] + [(n, e) for n in sizes for e in every_values]
    epoch_t = {c: [] for c in configs}
    step_t = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        one_run(64, 1, 3, Path(tmp) / "warm")  # imports, data, first-call costs
        for r in range(repeats):
            for c in configs:
                times, steps = one_run(c[0], c[1], epochs, Path(tmp) / f"r{r}_{c[0]}_{c[1]}")
                epoch_t[c] += times
                step_t[c] += steps
    base = statistics.fmean(epoch_t[(0, 1)])
    rows = []
    for c in configs:
        med = statistics.fmean(epoch_t[c])  # the mean: with every=k only every k-th epoch holds a step
        step = statistics.median(step_t[c]) if step_t[c] else 0.0
        rows.append({"probe_n": c[0], "every": c[1], "epoch_s": med, "step_s": step,
                     "overhead_pct": 100 * (med - base) / base, "step_pct": 100 * step / base,
                     "epochs": epochs, "repeats": repeats, "device": "cpu", "threads": torch.get_num_threads(),
                     "load_avg": os.getloadavg()[0]})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    lines = ["| probe samples | every | epoch (CPU ms) | monitor step (CPU ms) | overhead per epoch | step / epoch |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in df.itertuples(index=False):
        label = "no monitor" if r.probe_n == 0 else str(r.probe_n)
        lines.append(f"| {label} | {r.every if r.probe_n else '–'} | {1000 * r.epoch_s:.0f} | "
                     f"{1000 * r.step_s:.1f} | {r.overhead_pct:+.1f} % | {r.step_pct:.1f} % |")
    first = df.iloc[0]
    lines.append("")
    lines.append(f"CPU time, {int(first['threads'])} torch thread, digits PGD-AT epoch of the demo, mean over "
                 f"{int(first['epochs']) - 3} epochs × {int(first['repeats'])} interleaved rounds; load average "
                 f"{df['load_avg'].max():.1f} on a shared 2-core machine during the measurement.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--every", type=int, nargs="+", default=[1, 5])
    p.add_argument("--epochs", type=int, default=17)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    add_doc_options(p, "monitor cost")
    args = p.parse_args(argv)
    if args.from_csv:
        return doc_from_csvs(args.from_csv, markdown, args.doc, BEGIN, END)
    torch.set_num_threads(1)
    df = measure(args.sizes, args.every, args.epochs, args.repeats)
    write_csv(df, args.out)
    print(markdown(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
