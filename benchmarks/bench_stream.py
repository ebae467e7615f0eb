"""Full test sets at bounded memory: ``landscape measure --n all`` streamed from an ImageFolder tree, against
decoding every image and then measuring the decoded tensors in memory, one after the other.

Generates a Tiny-ImageNet-sized tree (``--classes`` 200 folders × ``--per-class`` 50 JPEGs of 64×64, 10,000
images) once in ``--workdir``, saves a 200-class model (``small_cnn`` on CPU, ``preact_resnet18`` with
``--arch preact_resnet18 --device cuda``), then runs, side by side in one run, each in a fresh process whose
process tree's memory is sampled (psutil):

* ``stream``: ``landscape measure CKPT --data imagefolder --n all --measures grad`` (DataLoader workers decode
  while the model measures);
* ``decode+measure``: the same images decoded into one tensor first (same workers), then
  ``landscape.measure`` on the tensors; its two phases are timed apart.

Goals (issue 22): the stream's peak RSS under 1.5 GB, and its wall time no more than decode + measure.

    python benchmarks/bench_stream.py --out benchmarks/results/stream_cpu.csv
    python benchmarks/bench_stream.py --from-csv benchmarks/results/stream_cpu.csv --doc docs/data.md
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
import psutil

from bench_units import add_doc_options, doc_from_csvs, write_csv  # noqa: E402 (benchmarks/ is on sys.path as a script)

BEGIN, END = "<!-- stream:begin (benchmarks/bench_stream.py --doc) -->", "<!-- stream:end -->"
GOAL_RSS_GB = 1.5


def make_tree(root: Path, classes: int, per_class: int, size: int) -> Path:
    """``root/imagefolder/c###/i###.jpg``: smooth random colour images (JPEG, quality 90), made once."""
    import numpy as np
    from PIL import Image

    tree = root / f"imagefolder_{classes}x{per_class}_{size}"
    done = tree / ".complete"
    if done.exists():
        return tree
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for c in range(classes):
        folder = tree / f"c{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            f = rng.uniform(1, 6, size=(3, 2))
            img = np.stack([np.sin(2 * np.pi * (f[k, 0] * xx + f[k, 1] * yy) + c) for k in range(3)], -1)
            noise = rng.normal(0, 0.1, img.shape)
            pixels = np.clip((img + noise + 1) * 127.5, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"i{i:03d}.jpg", quality=90)
    done.touch()
    return tree


def make_checkpoint(root: Path, arch: str, classes: int, size: int, width: int) -> Path:
    import torch

    from landscape import create_model, save_checkpoint

    torch.manual_seed(0)
    kwargs = {"num_classes": classes, "in_channels": 3}
    if arch == "small_cnn":
        kwargs.update(input_size=size, width=width)
    path = root / f"{arch}_{classes}_w{width}.pt"
    save_checkpoint(path, create_model(arch, **kwargs), epoch=1)
    return path


_IN_MEMORY = r"""
import json, sys, time, torch
from landscape import load_model, measure
from landscape.datasets import materialize, open_dataset
tree, ckpt, batch, device, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
workers = None if workers == "auto" else int(workers)
t0 = time.perf_counter()
x, y = materialize(open_dataset("imagefolder", "test", root=tree), batch_size=batch, workers=workers)
t1 = time.perf_counter()
model = load_model(ckpt, None, device=device)
measure(model, x, y, eps=8 / 255, measures=["grad"], batch_size=batch, device=device)
if device.startswith("cuda"):
    torch.cuda.synchronize()
t2 = time.perf_counter()
print(json.dumps({"decode_s": t1 - t0, "measure_s": t2 - t1, "n": len(y)}))
"""


def _tree_memory(procs) -> int:
    """Bytes the processes hold together: the sum of their PSS (shared pages, e.g. the torch libraries a forked
    DataLoader worker shares with its parent, split between them), else of their RSS."""
    total = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total


def run_sampled(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak memory of the process tree in GB (PSS), stdout) of ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, _tree_memory([ps, *ps.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{err}")
    return wall, peak / 1e9, out


def measure_once(tree: Path, ckpt: Path, args, work: Path) -> list[dict]:
    py = sys.executable
    stream_cmd = [py, "-m", "landscape.cli", "measure", str(ckpt), "--data", "imagefolder", "--data-root",
                  str(tree), "--n", "all", "--measures", "grad", "--batch-size", str(args.batch), "--device",
                  args.device, "--out", str(work / "stream.parquet"), "--quiet"]
    if args.workers != "auto":
        stream_cmd += ["--data-workers", args.workers]
    wall, rss, _ = run_sampled(stream_cmd)
    rows = [{"variant": "stream", "wall_s": wall, "peak_mem_gb": rss}]
    wall, rss, out = run_sampled([py, "-c", _IN_MEMORY, str(tree), str(ckpt), str(args.batch), args.device,
                                  args.workers])
    phases = json.loads(out.strip().splitlines()[-1])
    rows.append({"variant": "decode+measure", "wall_s": wall, "peak_mem_gb": rss, **phases})
    return rows


def markdown(df: pd.DataFrame) -> str:
    """The docs block: one table per machine/arch from the CSV rows."""
    lines = []
    for (machine, arch), g in df.groupby(["machine", "arch"], sort=False):
        s = g[g["variant"] == "stream"].iloc[0]
        m = g[g["variant"] == "decode+measure"].iloc[0]
        serial = m["decode_s"] + m["measure_s"]
        lines += [
            f"{int(s['n']):,} images {int(s['size'])}×{int(s['size'])} in {int(s['classes'])} class folders, "
            f"`{arch}`, batch {int(s['batch'])}, measures `grad`; {machine}, torch {s['torch']}, commit "
            f"{s['commit']} (fastest of {int(s['repeats'])} runs):",
            "",
            "| run | wall time | peak memory (process tree, PSS) |",
            "|---|---|---|",
            f"| `landscape measure --n all` (streamed) | {s['wall_s']:.1f} s | {s['peak_mem_gb']:.2f} GB |",
            f"| decode all images, then measure the tensors | {m['decode_s']:.1f} s + {m['measure_s']:.1f} s = "
            f"{serial:.1f} s | {m['peak_mem_gb']:.2f} GB |",
            "",
            f"Streamed ÷ (decode + measure): **{s['wall_s'] / serial:.2f}** (goal ≤ 1; the whole process, start-up "
            f"included, against the two phases alone); peak memory **{s['peak_mem_gb']:.2f} GB** (goal < "
            f"{GOAL_RSS_GB} GB).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--width", type=int, default=4, help="small_cnn's width (default 4: 1.1 M weights, 200 classes)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", default="auto", help="DataLoader workers for both variants (default: landscape's)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workdir", default=None, help="where the tree is made (default: a temporary folder)")
    p.add_argument("--out", default=None, help="write the rows as CSV here")
    add_doc_options(p, "stream")
    args = p.parse_args(argv)
    if args.from_csv:
        return doc_from_csvs(args.from_csv, markdown, args.doc, BEGIN, END)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tree = make_tree(root, args.classes, args.per_class, args.size)
        print(f"tree: {tree} ({time.perf_counter() - t0:.1f} s)")
        ckpt = make_checkpoint(root, args.arch, args.classes, args.size, args.width)
        best: dict[str, dict] = {}
        for _ in range(args.repeats):  # variants interleaved; the fastest run of each is kept
            for row in measure_once(tree, ckpt, args, root):
                print(row)
                if row["variant"] not in best or row["wall_s"] < best[row["variant"]]["wall_s"]:
                    best[row["variant"]] = row
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda") else
               f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores")
    df = pd.DataFrame(best.values()).assign(
        n=args.classes * args.per_class, size=args.size, classes=args.classes,
        arch=f"{args.arch}(width={args.width})" if args.arch == "small_cnn" else args.arch, batch=args.batch,
        device=args.device, repeats=args.repeats, machine=machine, torch=torch.__version__, commit=commit)
    print(markdown(df))
    write_csv(df, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
