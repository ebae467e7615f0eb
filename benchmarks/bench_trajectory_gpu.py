"""End-to-end cost of a trajectory at the scale users run: PreActResNet18 checkpoints x CIFAR-size inputs.

Writes ``--checkpoints`` random-weight ``preact_resnet18`` checkpoints (AdvLC format, with their epoch) and a
synthetic CIFAR-10 test set (``--n`` random 3x32x32 images drawn with torch on ``--device``, saved as a local
``cifar10.npz`` so the library's normal data path reads it; nothing is downloaded) into a temporary folder,
then, side by side in one run:

* ``pgd10``: one PGD-10 attack on the n inputs for one model (the floor any robustness measure pays);
* ``trajectory``: ``analyse_trajectory`` over every checkpoint with the default measures, plus ``hs`` when
  ``landscape.measures.curvature.hessian_spectrum`` exists (skipped with a note otherwise); the checkpoint
  files are read on a background thread while the previous checkpoint is measured;
* ``slices``: 1D slices (adversarial and random directions, 41 points) at the best and last epochs.

Prints and writes to ``--csv`` (one row per quantity): seconds per checkpoint, the share of that time spent
waiting for checkpoint reads (what prefetching did not hide) and reading in total, compute seconds per
checkpoint divided by the PGD-10 floor, slice seconds, and the peak GPU memory (serial executor).

GPU (defaults: 6 checkpoints, n=1000, batch 250)::

    python benchmarks/bench_trajectory_gpu.py --device cuda

On a machine without a GPU the defaults shrink to 2 checkpoints, n=8, batch 8 (what ``make bench`` runs
there); ``--measures grad`` makes a quick check of the script itself.
"""
from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


ARCH_KWARGS = {"preact_resnet18": {}, "small_cnn": {"in_channels": 3, "input_size": 32}}


def make_checkpoints(folder: Path, count: int, arch: str) -> list[Path]:
    from landscape import create_model

    paths = []
    for epoch in range(1, count + 1):
        torch.manual_seed(epoch)
        model = create_model(arch, **ARCH_KWARGS[arch])
        path = folder / f"epoch_{epoch}.pt"
        torch.save({"epoch": epoch, "state_dict": model.state_dict(), "best_acc1": 0.0, "best_pgd": 0.0,
                    "best_fgsm": 0.0, "optimizer": {}}, path)
        paths.append(path)
    return paths


def make_cifar_npz(path: Path, n: int, device: str, seed: int = 0) -> None:
    """``n`` random uint8 CIFAR-size images and labels per split, drawn on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    arrays = {}
    for split in ("train", "test"):
        x = torch.randint(0, 256, (n, 32, 32, 3), generator=g, device=device, dtype=torch.uint8)
        y = torch.arange(n, device=device) % 10  # every class present, as the stratified subset needs
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x.cpu().numpy(), y.cpu().numpy().astype(np.int64)
    np.savez(path, **arrays)


def measure_names() -> tuple[list[str] | None, str]:
    """The default measures, plus ``hs`` when the library has it; and a note on what was chosen."""
    from landscape.measures import MEASURES, curvature, registry

    default = getattr(registry, "DEFAULT_MEASURES", None)
    if not hasattr(curvature, "hessian_spectrum"):
        return None, "hs skipped: landscape.measures.curvature.hessian_spectrum does not exist in this version"
    if "hs" not in MEASURES:
        return None, "hs skipped: hessian_spectrum exists but 'hs' is not a selectable measure"
    base = [m for m in (default if default is not None else MEASURES) if m != "hs"]
    return [*base, "hs"], "measures: default + hs"


def pgd_floor(model, x, y, eps: float, batch: int, device: str, repeats: int) -> float:
    """Fastest of ``repeats`` PGD-10 runs over all of x, in batches (seconds)."""
    from landscape.attacks import pgd

    best = float("inf")
    for _ in range(repeats + 1):  # the first run is a warm-up (cuDNN autotuning, allocator)
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            pgd(model, x[i:i + batch], y[i:i + batch], eps, steps=10)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--checkpoints", type=int, default=None, help="default 6 on a GPU, 2 on CPU")
    p.add_argument("--n", type=int, default=None, help="test samples; default 1000 on a GPU, 8 on CPU")
    p.add_argument("--batch-size", type=int, default=None, help="default 250 on a GPU, 8 on CPU")
    p.add_argument("--executor", default="serial", choices=["serial", "process"],
                   help="process: one worker per GPU (peak memory is then not measured)")
    p.add_argument("--arch", default="preact_resnet18", choices=sorted(ARCH_KWARGS),
                   help="small_cnn only to check the script itself quickly")
    p.add_argument("--measures", default=None,
                   help="comma-separated measures instead of the default + hs (e.g. grad for a quick check)")
    p.add_argument("--repeats", type=int, default=2, help="PGD-10 floor: fastest of this many runs")
    p.add_argument("--csv", default="runs/bench/trajectory_gpu.csv", help="where to write the numbers")
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    count = args.checkpoints or (6 if gpu else 2)
    n = args.n or (1000 if gpu else 8)
    batch = args.batch_size or (250 if gpu else 8)
    eps = 8 / 255

    from landscape.checkpoints import load_model
    from landscape.datasets import load_dataset
    from landscape.diagnose import best_last_epochs
    from landscape.slices import slice_1d
    from landscape.trajectory import analyse_trajectory, read_result

    measures, note = measure_names()
    if args.measures:
        measures, note = args.measures.split(","), f"measures: {args.measures}"
    name = torch.cuda.get_device_name(args.device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {args.device} ({name}); {count} x {args.arch} checkpoints, "
          f"n={n} CIFAR-size test inputs, batch {batch}, PGD-10 eps 8/255; {note}")

    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "ckpt").mkdir()
        paths = make_checkpoints(tmp / "ckpt", count, args.arch)
        make_cifar_npz(tmp / "cifar10.npz", n, args.device)
        x, y = load_dataset("cifar10", "test", root=tmp / "cifar10.npz", n=n, seed=0)
        x, y = x.to(args.device), y.to(args.device)
        model = load_model(paths[0], args.arch, device=args.device, **ARCH_KWARGS[args.arch])
        t_pgd = pgd_floor(model, x, y, eps, batch, args.device, args.repeats)
        del model

        if gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(args.device)
        _sync(args.device)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = analyse_trajectory(tmp / "ckpt", args.arch, "cifar10", out_dir=tmp / "out",
                                       arch_kwargs=ARCH_KWARGS[args.arch],
                                       data_root=tmp / "cifar10.npz", n=n, eps=eps, steps=10, splits=("test",),
                                       measures=measures, batch_size=batch, device=args.device,
                                       executor=args.executor, progress=False)
        _sync(args.device)
        t_traj = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(args.device) / 2**30 if gpu and args.executor == "serial" else float("nan")
        failed = table.attrs["failed"]
        metas = [read_result(f)[1] for f in sorted((tmp / "out" / "results").glob("*.parquet"))]
        seconds = sum(m["seconds"] for m in metas)
        waited = sum(m.get("wait_seconds", 0.0) for m in metas)
        read = sum(m.get("read_seconds", 0.0) for m in metas)

        best_last = best_last_epochs(table)
        epochs = sorted(set(next(iter(best_last.values())).values())) if best_last else [count]
        _sync(args.device)
        t0 = time.perf_counter()
        alphas = torch.linspace(-2 * eps, 2 * eps, 41)
        for epoch in epochs:
            model = load_model(paths[epoch - 1], args.arch, device=args.device, **ARCH_KWARGS[args.arch])
            for direction in ("adversarial", "random"):
                slice_1d(model, x, y, direction, alphas, eps=eps, steps=10, as_frame=False)
        _sync(args.device)
        t_slices = time.perf_counter() - t0

    per_ckpt = t_traj / count
    compute = (seconds - waited) / count
    rows += [
        ("checkpoints", count, "count"), ("n", n, "samples"), ("failed", failed, "count"),
        ("pgd10_floor", t_pgd, "s"),
        ("trajectory_wall", t_traj, "s"),
        ("seconds_per_checkpoint", per_ckpt, "s"),
        ("compute_per_checkpoint", compute, "s"),
        ("compute_over_pgd10", compute / t_pgd, "ratio"),
        ("waiting_for_reads_share", waited / seconds if seconds else float("nan"), "fraction"),
        ("reading_share", read / t_traj, "fraction"),
        ("bookkeeping_per_checkpoint", per_ckpt - seconds / count, "s"),
        ("slices_best_last", t_slices, "s"),
        ("slices_epochs", len(epochs), "count"),
        ("gpu_memory_peak", peak, "GiB"),
    ]
    width = max(len(r[0]) for r in rows)
    for quantity, value, unit in rows:
        print(f"{quantity:<{width}}  {value:10.4g}  {unit}")
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["quantity", "value", "unit", "arch", "device", "device_name", "measures", "executor", "torch"])
        for quantity, value, unit in rows:
            w.writerow([quantity, value, unit, args.arch, args.device, name, ",".join(measures or ["default"]), args.executor,
                        torch.__version__])
    print(f"-> {out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
