"""Cost of one training epoch of every training method, in gradient units and relative to PGD-AT, side by side.

Every method of :data:`landscape.objectives.METHODS` (``at_decomposed`` aside: PGD-AT plus a clean pass) trains
one epoch on the same data with its own model copy; the epochs run interleaved (round-robin, ``--repeats``
rounds after a warm-up epoch each, :func:`bench_measures.round_times`), so every method sees the same machine
load. Columns:

* ``forwards``  — model forward passes per batch, counted with a forward hook (double backpropagation and
  the AWP proxy pass count as what they are: extra forwards and backwards);
* ``units``     — seconds per batch / seconds of one *gradient*: forward + backward of the batch-mean
  cross-entropy to the parameters on a batch (standard training without the optimizer step), timed over the
  epoch's batches in the same rounds;
* ``vs_pgd_at`` — epoch wall time / PGD-AT's epoch wall time, in the same round (median over rounds;
  ``vs_pgd_at_sd`` their spread over the ``repeats`` rounds, for :func:`landscape.study.methods.efficiency_claim`).

All methods use the same inner-loop length (``--steps``, default 7 as the digits study), so the ratios are "at
equal PGD steps". Default setting: the digits study's (MLP 64-256-256-10, 300 training samples, batch 64,
eps 0.1). ``--arch preact_resnet18 --device cuda`` runs the CIFAR-sized case on random 32x32 inputs.

    python benchmarks/bench_methods.py --out benchmarks/results/methods_cpu.csv
    python benchmarks/bench_methods.py --from-csv benchmarks/results/methods_cpu.csv --doc docs/training.md
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys

import pandas as pd
import torch

from landscape._base import derive_seed
from landscape.objectives import ADVERSARIAL_METHODS, DEFAULT_LAM, METHODS, batch_loss
from landscape.training import seeded_model

from bench_measures import commit, round_times  # noqa: E402 (benchmarks/ is on sys.path when run as a script)
from bench_units import add_doc_options, doc_from_csvs, write_csv  # noqa: E402

BENCH_METHODS = tuple(m for m in METHODS if m != "at_decomposed")
BEGIN, END = "<!-- methods-cost:begin (benchmarks/bench_methods.py --doc) -->", "<!-- methods-cost:end -->"
#: the landscape regularisers with the same inner steps (landscape.study.methods.REGULARISERS, repeated here so
#: the benchmark does not import the study).
REGULARISERS = ("at_gradreg", "llr", "trades", "mart", "awp_at")


def _data(arch: str, n: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    if arch == "mlp":
        from landscape.datasets import load_dataset

        x, y = load_dataset("digits", "train", n=n, seed=0)
        return x.float().to(device), y.to(device)
    x = torch.rand(n, 3, 32, 32, generator=g)
    return x.to(device), torch.randint(0, 10, (n,), generator=g).to(device)


def _model(arch: str, device):
    kw = dict(hidden=(256, 256)) if arch == "mlp" else dict(num_classes=10)
    return seeded_model(arch, 0, **kw).to(device).train()


class _Counter:
    def __init__(self, model):
        self.n = 0
        model.register_forward_hook(self)

    def __call__(self, *args):
        self.n += 1


def bench(arch: str, *, n: int, batch: int, eps: float, steps: int, device: torch.device, repeats: int,
          methods=BENCH_METHODS) -> list[dict]:
    x, y = _data(arch, n, device)
    n_batches = -(-x.shape[0] // batch)
    base = _model(arch, device)
    models = {m: copy.deepcopy(base) for m in methods}
    counters = {m: _Counter(models[m]) for m in methods}
    opts = {m: torch.optim.SGD(models[m].parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4) for m in methods}

    def epoch(method):
        model, opt = models[method], opts[method]
        for b in range(n_batches):
            xb, yb = x[b * batch:(b + 1) * batch], y[b * batch:(b + 1) * batch]
            loss = batch_loss(model, xb, yb, method=method, eps=eps if method in ADVERSARIAL_METHODS else 0.0,
                              steps=steps, lam=DEFAULT_LAM[method], seed=derive_seed(0, b))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    grad_model = copy.deepcopy(base)

    def gradient():  # one gradient per batch of the epoch: the same granularity as an epoch's timing
        for b in range(n_batches):
            xb, yb = x[b * batch:(b + 1) * batch], y[b * batch:(b + 1) * batch]
            loss = torch.nn.functional.cross_entropy(grad_model(xb), yb)
            torch.autograd.grad(loss, list(grad_model.parameters()))

    ops = {"gradient": gradient, **{m: (lambda m=m: epoch(m)) for m in methods}}
    for c in counters.values():
        c.n = 0
    times = round_times(ops, device, repeats)
    unit = statistics.median(times["gradient"]) / n_batches
    ref = times.get("pgd_at")
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for m in methods:
        sec = statistics.median(times[m])
        rows.append(dict(arch=arch, batch=batch, n_train=int(x.shape[0]), steps=steps, device=label, method=m,
                         epoch_s=sec, forwards=counters[m].n / ((repeats + 1) * n_batches),
                         units=sec / n_batches / unit,
                         vs_pgd_at=statistics.median(t / r for t, r in zip(times[m], ref)) if ref else float("nan"),
                         vs_pgd_at_sd=statistics.stdev(t / r for t, r in zip(times[m], ref)) if ref and repeats > 1
                         else float("nan"), repeats=repeats,
                         gradient_s=unit, torch=torch.__version__, commit=commit()))
    return rows


def markdown(df: pd.DataFrame) -> str:
    """The cost block of docs/training.md: one row per method, one column group per (arch, device)."""
    groups = list(df.groupby(["arch", "device", "batch", "steps"], sort=False))
    head = "| method | " + " | ".join(f"{a}, batch {b}, {s} steps, {d}: fwd/batch · grad units · ×PGD-AT"
                                        for (a, d, b, s), _ in groups) + " |"
    lines = [head, "|---|" + "---|" * len(groups)]
    for m in dict.fromkeys(df["method"]):
        cells = []
        for _, g in groups:
            r = g[g["method"] == m]
            cells.append("" if r.empty else f"{r['forwards'].iloc[0]:.0f} · {r['units'].iloc[0]:.1f} · "
                                            f"{r['vs_pgd_at'].iloc[0]:.2f}")
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    notes = []
    for (a, d, b, s), g in groups:
        r = dict(zip(g["method"], g["vs_pgd_at"]))
        if "at_advlc" in r:
            peers = [p for p in REGULARISERS if p in r]
            cheaper = [p for p in peers if r["at_advlc"] < r[p]]
            notes.append(f"{a} on {d}: AdvLC costs {r['at_advlc']:.2f}x PGD-AT, less than "
                         f"{len(cheaper)}/{len(peers)} of the other landscape regularisers ({', '.join(cheaper)})")
    versions = ", ".join(sorted(set(df["torch"].astype(str))))
    codes = ", ".join(sorted(set(df["commit"].fillna("").astype(str))))
    return "\n".join(lines) + "\n\n" + "; ".join(notes) + f" (torch {versions}, code {codes}).\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="mlp", choices=["mlp", "preact_resnet18"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=None, help="training samples (default 300; 1280 for preact_resnet18)")
    p.add_argument("--batch", type=int, default=None, help="default 64 (mlp), 128 (preact_resnet18)")
    p.add_argument("--steps", type=int, default=None, help="inner steps of every method (default 7 mlp, 10 else)")
    p.add_argument("--eps", type=float, default=None, help="default 0.1 (mlp), 8/255 else")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", default=",".join(BENCH_METHODS))
    p.add_argument("--out", default=None, help="write the table as CSV here")
    add_doc_options(p, "methods-cost")
    args = p.parse_args(argv)
    if args.from_csv:
        return doc_from_csvs(args.from_csv, markdown, args.doc, BEGIN, END)
    torch.set_num_threads(args.threads)
    mlp = args.arch == "mlp"
    rows = bench(args.arch, n=args.n or (300 if mlp else 1280), batch=args.batch or (64 if mlp else 128),
                 eps=args.eps or (0.1 if mlp else 8 / 255), steps=args.steps or (7 if mlp else 10),
                 device=torch.device(args.device), repeats=args.repeats,
                 methods=[m for m in args.methods.split(",") if m])
    df = pd.DataFrame(rows)
    write_csv(df, args.out)
    print(markdown(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
