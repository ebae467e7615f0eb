"""Throughput of ``slice_2d`` against the raw batched forward pass and a naive per-point loop.

Measured side by side in one run, for each model:

(a) raw batched forward throughput (points/s) on pre-built inputs, batch = the block size slice_2d uses;
(b) ``slice_2d`` throughput (points/s) on a grid of that many points (``as_frame=False``: the grid evaluation);
    (b') the same including the DataFrame (default output) is printed too;
(c) a naive Python loop building and evaluating one point at a time (timed on a subset, extrapolated).

(d) ``slice_2d`` under ``torch.autocast`` in bfloat16 and float16 (``--autocast``; loss values only): the
    largest relative loss error against (b) and the speed-up over (b).

Goals: (b)/(a) >= 0.85 and (b)/(c) >= 5. Autocast would become a ``slice_2d`` option only where it is both
accurate (every loss within ``AUTOCAST_REL_ERR`` relative, ``AUTOCAST_ABS_ERR`` absolute, of float32) and
at least ``AUTOCAST_SPEEDUP`` times faster; the verdict is printed per case and written to ``--out``. No slicing code can beat (a), so (b)/(c) <= (a)/(c), which is printed
as the bound: where batching itself gains little (a large CNN on a CPU) the second goal is out of reach. Each
timing is the best of ``--repeats`` rounds, with (a), (b), (b') and (c) interleaved so that load from other
processes hits all alike. The ratios are printed last.

    python benchmarks/bench_slices.py                 # CPU, small defaults
    python benchmarks/bench_slices.py --device cuda   # larger default grids on a GPU
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from landscape import create_model
from landscape.slices import grid, normalize_direction, orthogonalize, slice_2d

GOAL_FORWARD = 0.85
GOAL_NAIVE = 5.0
AUTOCAST_REL_ERR = 1e-2
AUTOCAST_ABS_ERR = 1e-3
AUTOCAST_SPEEDUP = 1.2
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Case:
    name: str
    arch: str
    kwargs: dict
    shape: tuple[int, ...]
    samples: int
    grid: int


def cases(device: str, scale: float) -> list[Case]:
    gpu = torch.device(device).type == "cuda"
    small = Case("small_cnn, 1x8x8 (digits)", "small_cnn", {}, (1, 8, 8), 64 if gpu else 16, 101 if gpu else 31)
    preact = Case("preact_resnet18, 3x32x32", "preact_resnet18", {}, (3, 32, 32), 64 if gpu else 1,
                  51 if gpu else 11)
    out = []
    for c in (small, preact):
        c.samples = max(1, round(c.samples * scale))
        out.append(c)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def run_case(case: Case, device: torch.device, repeats: int, naive_points: int, max_batch: int,
             autocast: bool = False) -> dict:
    torch.manual_seed(0)
    model = create_model(case.arch, **case.kwargs).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(case.samples, *case.shape, generator=g).to(device)
    y = torch.randint(0, 10, (case.samples,), generator=g).to(device)
    d1 = torch.randn(x.shape, generator=g).to(device)
    d2 = orthogonalize(torch.randn(x.shape, generator=g).to(device), d1)
    d1, d2 = normalize_direction(d1), normalize_direction(d2)
    coords = grid(0.1, case.grid)
    n_points = case.samples * case.grid ** 2

    def framed():
        return slice_2d(model, x, y, d1, d2, coords, coords, normalization=None, max_batch=max_batch)

    def sliced():
        return slice_2d(model, x, y, d1, d2, coords, coords, normalization=None, max_batch=max_batch,
                        as_frame=False)

    chunk = framed().attrs["chunk_size"]  # also the warm-up; the largest block slice_2d evaluates at once
    # (a) raw forward on pre-built inputs: the same number of points, in batches of slice_2d's block size
    batch = torch.rand(chunk, *case.shape, generator=g).to(device)
    n_batches = max(1, round(n_points / chunk))

    def forward():
        with torch.inference_mode():
            for _ in range(n_batches):
                model(batch)

    pts = [(s, i, j) for s in range(case.samples) for i in range(case.grid) for j in range(case.grid)]
    step = max(1, len(pts) // naive_points)
    subset = pts[::step][:naive_points]

    def naive():
        with torch.no_grad():
            for s, i, j in subset:
                p = x[s:s + 1] + float(coords[i]) * d1[s:s + 1] + float(coords[j]) * d2[s:s + 1]
                F.cross_entropy(model(p), y[s:s + 1]).item()

    def amp(dtype):
        def run():
            with torch.autocast(device_type=device.type, dtype=dtype):
                return sliced()
        return run

    amps = {k: amp(v) for k, v in AUTOCAST_DTYPES.items()} if autocast else {}
    reference = sliced().loss  # also the warm-up
    forward(), naive()
    errors = {}
    for key, fn in amps.items():
        loss = fn().loss.double()
        diff = (loss - reference.double()).abs()
        errors[key] = (float((diff / reference.double().abs().clamp_min(1e-12)).max()), float(diff.max()))
    t_fwd, t_slice, t_frame, t_naive = [], [], [], []
    t_amp = {k: [] for k in amps}
    for _ in range(repeats):
        t_fwd.append(_timed(forward, device))
        t_slice.append(_timed(sliced, device))
        t_frame.append(_timed(framed, device))
        t_naive.append(_timed(naive, device))
        for key, fn in amps.items():
            t_amp[key].append(_timed(fn, device))
    out = {
        "case": case.name, "points": n_points, "chunk": chunk,
        "forward": n_batches * chunk / min(t_fwd),
        "slice": n_points / min(t_slice),
        "frame": n_points / min(t_frame),
        "naive": len(subset) / min(t_naive),
    }
    for key in amps:
        rel, absolute = errors[key]
        speedup = min(t_slice) / min(t_amp[key])
        out.update({f"{key}_max_rel_err": rel, f"{key}_max_abs_err": absolute, f"{key}_speedup": speedup,
                    f"{key}_ok": (rel <= AUTOCAST_REL_ERR or absolute <= AUTOCAST_ABS_ERR)
                    and speedup >= AUTOCAST_SPEEDUP})
    return out


def memory_check(device: torch.device, samples: int = 256, n: int = 101, budget_gib: float = 24.0) -> None:
    """The issue's scale: a 101x101 grid for 256 CIFAR-size inputs on preact_resnet18 within a memory budget."""
    model = create_model("preact_resnet18").to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(samples, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (samples,), generator=g).to(device)
    budget = int(budget_gib * 1024**3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t = _timed(lambda: slice_2d(model, x, y, "random", "random", grid(0.1, n), grid(0.1, n), max_bytes=budget),
               device)
    points = samples * n * n
    msg = f"memory check: {samples} x {n} x {n} = {points:,} points in {t:.1f} s ({points / t:,.0f} pts/s)"
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 1024**3
        msg += f", peak CUDA memory {peak:.2f} GiB (budget {budget_gib:g} GiB)"
    print(msg)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the best is kept (default 3)")
    p.add_argument("--naive-points", type=int, default=30, help="points timed in the naive loop (default 30)")
    p.add_argument("--max-batch", type=int, default=None, help="default: the library's (4096 CPU, 65536 CUDA)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the number of samples per case")
    p.add_argument("--only", choices=["small_cnn", "preact_resnet18"], default=None)
    p.add_argument("--autocast", action="store_true",
                   help="also time slice_2d under bf16/fp16 autocast and report its loss error")
    p.add_argument("--out", default=None, help="write one CSV row per case here")
    p.add_argument("--memory-check", action="store_true",
                   help="also slice 256 CIFAR-size inputs on a 101x101 grid with preact_resnet18 under a 24 GiB "
                        "budget (2.6M points: minutes on a GPU, hours on a CPU)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                f" ({torch.get_num_threads()} threads)") + f", torch {torch.__version__}")
    rows = []
    for case in cases(args.device, args.scale):
        if args.only and case.arch != args.only:
            continue
        r = run_case(case, device, args.repeats, args.naive_points, args.max_batch, autocast=args.autocast)
        rows.append(r)
        print(f"{r['case']}: {r['points']} points, chunk {r['chunk']}: (a) forward {r['forward']:,.0f} pts/s, "
              f"(b) slice_2d {r['slice']:,.0f} pts/s (b') with DataFrame {r['frame']:,.0f} pts/s, "
              f"(c) naive loop {r['naive']:,.0f} pts/s")
    if args.autocast:
        print(f"\nautocast (option only if every loss is within {AUTOCAST_REL_ERR:g} relative or "
              f"{AUTOCAST_ABS_ERR:g} absolute of float32 and >= {AUTOCAST_SPEEDUP:g}x faster):")
        for r in rows:
            for key in AUTOCAST_DTYPES:
                print(f"  {r['case']} {key}: max rel. loss error {r[f'{key}_max_rel_err']:.2e}, max abs. "
                      f"{r[f'{key}_max_abs_err']:.2e}, speed-up {r[f'{key}_speedup']:.2f}x -> "
                      f"{'both hold' if r[f'{key}_ok'] else 'not an option'}")
    if args.out:
        import pandas as pd

        label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        pd.DataFrame(rows).assign(device=label, torch=torch.__version__).to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    if args.memory_check:
        memory_check(device)
    print("\nratios (goal: b/a >= %.2f, b/c >= %g)" % (GOAL_FORWARD, GOAL_NAIVE))
    ok = True
    for r in rows:
        ba, bc, ac = r["slice"] / r["forward"], r["slice"] / r["naive"], r["forward"] / r["naive"]
        good = ba >= GOAL_FORWARD and bc >= GOAL_NAIVE
        ok &= good
        print(f"  {r['case']}: b/a = {ba:.2f}, b/c = {bc:.1f} (bound a/c = {ac:.1f}), "
              f"b'/a = {r['frame'] / r['forward']:.2f}  {'ok' if good else 'BELOW GOAL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
