"""Per-sample histories at scale: bytes per sample-epoch and time per epoch of ``landscape trajectory
--histories`` for n training samples, and the memory it needs as n grows (issue 26).

Synthetic 8×8 inputs with 10 classes through the demo's MLP (64-256-256-10): ``--epochs`` checkpoints (weights
perturbed step by step) are measured on n training samples held in memory, with the attribution measures
(``grad``, ``curv_adv``, ``logit_margin``; PGD-10), and the per-sample history table is streamed into
``histories.parquet``. Each n runs in a fresh process whose peak RSS is read (``resource``), so the table shows
whether memory follows the batch or the sample count.

Cost in gradient units: one epoch of histories is one measure pass over the n samples, i.e. per sample PGD-10
(10 input gradients) + the clean input gradient + one Hessian-vector product along the adversarial direction
(about 2 gradients) ≈ 13 gradient evaluations; ``grad_units`` is the measured ratio of the epoch's time to one
batched input-gradient pass over the same n samples (the fastest of 5; the epoch time is the mean over the
epochs, checkpoint reading included, so on a shared machine the ratio is an upper bound).

    python benchmarks/bench_attribution.py --out benchmarks/results/attribution_cpu.csv
    python benchmarks/bench_attribution.py --from-csv benchmarks/results/attribution_cpu.csv --doc docs/attribution.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench_units import add_doc_options, doc_from_csvs, write_csv  # noqa: E402 (benchmarks/ is on sys.path as a script)

BEGIN, END = "<!-- attribution-cost:begin (benchmarks/bench_attribution.py --doc) -->", "<!-- attribution-cost:end -->"
MEASURES = ["grad", "curv_adv", "logit_margin"]


def one(n: int, epochs: int, device: str, batch: int, threads: int) -> dict:
    """Measure one n in this process; returns a result row."""
    import resource

    import torch

    from landscape import create_model
    from landscape.checkpoints import save_checkpoint
    from landscape.measures._autograd import loss_logits_grad
    from landscape.trajectory import analyse_trajectory

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(0)
    model = create_model("mlp", hidden=(256, 256))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for e in range(1, epochs + 1):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            paths.append(save_checkpoint(tmp / f"model_e{e:03d}.pt", model, epoch=e))
        # one gradient unit: a batched input-gradient pass over the n samples
        m = model.to(device).eval()
        unit = float("inf")
        for _ in range(5):  # the fastest of 5 passes: the machine may be shared
            t0 = time.perf_counter()
            for i in range(0, n, batch):
                loss_logits_grad(m, x[i:i + batch].to(device), y[i:i + batch].to(device))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            unit = min(unit, time.perf_counter() - t0)
        t0 = time.perf_counter()
        analyse_trajectory(paths, "mlp", {"train": (x, y)}, out_dir=tmp / "run", arch_kwargs={"hidden": (256, 256)},
                           splits=("train",), n="all", eps=0.1, steps=10, measures=MEASURES, batch_size=batch,
                           device=device, progress=False, histories=True)
        total = time.perf_counter() - t0
        size = (tmp / "run" / "histories.parquet").stat().st_size
        per_ckpt = (tmp / "run" / "results").glob("*.parquet")
        result_bytes = sum(p.stat().st_size for p in per_ckpt)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    return dict(n=n, epochs=epochs, device=device, batch=batch, threads=threads, epoch_s=total / epochs,
                grad_unit_s=unit, grad_units=total / epochs / unit, history_bytes=size,
                bytes_per_sample_epoch=size / (n * epochs), mb_per_1000x100=size / (n * epochs) * 1e5 / 1e6,
                result_bytes_per_sample_epoch=result_bytes / (n * epochs), peak_rss_mb=peak,
                cpu=platform.processor() or platform.machine(), load_1min=round(os.getloadavg()[0], 2),
                torch=torch.__version__)


def markdown(df: pd.DataFrame) -> str:
    lines = ["| device | n | epochs | time per epoch (s) | gradient units per epoch | bytes per sample-epoch | "
             "MB per 1,000 samples × 100 epochs | peak RSS (MB) | load |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r['device']} | {int(r['n']):,} | {int(r['epochs'])} | {r['epoch_s']:.2f} | "
                     f"{r['grad_units']:.1f} | {r['bytes_per_sample_epoch']:.1f} | {r['mb_per_1000x100']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['load_1min']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[2500, 10000], help="training-set sizes (default 2500 10000)")
    p.add_argument("--epochs", type=int, default=3, help="checkpoints measured (default 3)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the table as CSV here")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: one n in this process
    add_doc_options(p, "attribution-cost")
    args = p.parse_args(argv)
    if args.from_csv:
        return doc_from_csvs(args.from_csv, markdown, args.doc, BEGIN, END)
    if args.one is not None:
        print(json.dumps(one(args.one, args.epochs, args.device, args.batch, args.threads)))
        return 0
    rows = []
    for n in args.n:  # a fresh process per n: its peak RSS is that n's alone
        cmd = [sys.executable, __file__, "--one", str(n), "--epochs", str(args.epochs), "--device", args.device,
               "--batch", str(args.batch), "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    write_csv(df, args.out)
    print(markdown(df))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
