"""Cost of the curvature measures relative to one per-sample input gradient, measured side by side.

For each model the timed operations run interleaved (round-robin, ``--repeats`` rounds after a warm-up) and
the median time of each is divided by the median time of one input gradient of the same batch:

* ``gradient``               — ∇ₓ of the summed per-sample CE (one forward + one backward), the unit;
* ``curv (func)``            — ``directional_curvature(..., method="func")`` (forward-over-reverse HVP);
* ``curv (double_backprop)`` — ``directional_curvature(..., method="double_backprop")``;
* ``curv (auto)``            — the default method;
* ``finite differences``     — central differences of two gradients, ``(g(x+hd) − g(x−hd))·d / 2h‖d‖²``
  (approximate, for comparison);
* ``curv fwd-over-fwd`` / ``curv rev-over-fwd`` — two other exact ways to get dᵀHd (nested ``torch.func.jvp``;
  ``torch.func.grad`` of a JVP), kept here as the evidence for the library's choice of double backprop;
* ``eig_top (20 iters)``     — ``top_eigenvalue(iters=20, tol=0)``, i.e. 20 HVPs.

Usage: ``python benchmarks/bench_measures.py [--device cpu|cuda] [--batch 32] [--repeats 3] [--threads N]``.
The ratios are printed last, one line per (model, operation).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from landscape import create_model
from landscape._base import per_sample_loss
from landscape.measures.curvature import directional_curvature, top_eigenvalue

CASES = [
    ("preact_resnet18", {"num_classes": 10, "in_channels": 3}, (3, 32, 32)),
    ("small_cnn", {"in_channels": 1, "num_classes": 10, "input_size": 8}, (1, 8, 8)),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(per_sample_loss(model(x), y).sum(), x)[0]


def _finite_difference_curvature(model, x, y, d, h: float = 1e-3) -> torch.Tensor:
    diff = _gradient(model, x + h * d, y) - _gradient(model, x - h * d, y)
    return (diff * d).flatten(1).sum(1) / (2 * h * (d * d).flatten(1).sum(1))


def _fwd_fwd_curvature(model, x, y, d) -> torch.Tensor:
    """Candidate: dᵀHd by nested forward mode (jvp of jvp) of the per-sample losses."""
    def loss(z):
        return per_sample_loss(model(z), y)

    def slope(z):
        return torch.func.jvp(loss, (z,), (d,))[1]

    return torch.func.jvp(slope, (x,), (d,))[1] / (d * d).flatten(1).sum(1)


def _rev_fwd_curvature(model, x, y, d) -> torch.Tensor:
    """Candidate: dᵀHd as ∇ₓ(∇L·d)·d with the inner directional derivative in forward mode."""
    def slope(z):
        return torch.func.jvp(lambda w: per_sample_loss(model(w), y).sum(), (z,), (d,))[1]

    g = torch.func.grad(slope)(x)
    return (g * d).flatten(1).sum(1) / (d * d).flatten(1).sum(1)


def operations(model, x, y, d) -> dict[str, Callable[[], object]]:
    return {
        "gradient": lambda: _gradient(model, x, y),
        "curv (func)": lambda: directional_curvature(model, x, y, d, method="func"),
        "curv (double_backprop)": lambda: directional_curvature(model, x, y, d, method="double_backprop"),
        "curv (auto)": lambda: directional_curvature(model, x, y, d),
        "finite differences": lambda: _finite_difference_curvature(model, x, y, d),
        "curv fwd-over-fwd": lambda: _fwd_fwd_curvature(model, x, y, d),
        "curv rev-over-fwd": lambda: _rev_fwd_curvature(model, x, y, d),
        "eig_top (20 iters)": lambda: top_eigenvalue(model, x, y, iters=20, tol=0.0),
    }


def bench_case(name: str, kwargs: dict, shape: tuple[int, ...], *, batch: int, device: torch.device,
               repeats: int) -> dict[str, float]:
    """Median seconds of each operation, measured round-robin in one run."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name, **kwargs).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch, *shape, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    d = torch.randn(batch, *shape, generator=gen).to(device)
    ops = operations(model, x, y, d)
    for fn in ops.values():  # warm-up (kernel selection, torch.func tracing caches)
        fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in ops}
    for _ in range(repeats):
        for key, fn in ops.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cases", default=",".join(c[0] for c in CASES), help="comma-separated model names")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    wanted = args.cases.split(",")
    results = {}
    for name, kwargs, shape in CASES:
        if name in wanted:
            results[name] = bench_case(name, kwargs, shape, batch=args.batch, device=device, repeats=args.repeats)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {label}; batch {args.batch}; median of {args.repeats} interleaved rounds; "
          f"torch {torch.__version__}")
    for name, res in results.items():
        print(f"{name}: one gradient = {res['gradient'] * 1e3:.2f} ms")
    print("ratios to one input gradient (lower is cheaper):")
    for name, res in results.items():
        for key, seconds in res.items():
            if key != "gradient":
                print(f"  {name:<16} {key:<24} {seconds / res['gradient']:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
