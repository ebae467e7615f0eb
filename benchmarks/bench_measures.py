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
* ``hvp (kept graph)``       — one more product on a ``HessianOperator`` whose first backward is kept (what
  every Lanczos step costs);
* ``eig_top (auto)``         — ``top_eigenvalue`` with its defaults (for these ReLU nets: the exact
  Gauss–Newton reduction from the logit Jacobian, tested per sample by one product);
* ``eig_top (Lanczos)``      — ``top_eigenvalue(solver="lanczos")`` (batched Lanczos, per-sample stopping).

Then the accuracy of ``eig_top`` with both solvers (issue 15 goal: <= 15 gradients at <= 1e-3 median / 1e-2
max relative error): small_cnn on a digits test batch (``--accuracy-batch``, default 64) against dense
per-sample Hessians (``torch.autograd.functional.hessian``) of the same model in the same dtype, for float32
and float64. Each sample's reference is computed twice: alone, and inside the batch's forward pass (the
solvers see the batch: in float32 a batched convolution rounds differently, which can move a pre-activation
within rounding of 0 across a ReLU kink and so change that sample's Hessian; the in-batch reference shows
the solver's own error).

Usage: ``python benchmarks/bench_measures.py [--device cpu|cuda] [--batch 32] [--repeats 3] [--threads N]
[--out results.csv]``. The ratios are printed last, one line per (model, operation).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from landscape import create_model
from landscape._base import per_sample_loss
from landscape.measures.curvature import HessianOperator, _top_from_ritz, directional_curvature, top_eigenvalue

CASES = [
    ("preact_resnet18", {"num_classes": 10, "in_channels": 3}, (3, 32, 32)),
    ("small_cnn", {"in_channels": 1, "num_classes": 10, "input_size": 8}, (1, 8, 8)),
]


DOC_BEGIN, DOC_END = "<!-- curvature-cost:begin (benchmarks/bench_measures.py --doc) -->", "<!-- curvature-cost:end -->"
COLUMNS = ["curv (auto)", "curv (func)", "finite differences", "hvp (kept graph)", "eig_top (auto)",
           "eig_top (Lanczos)"]


def commit() -> str:
    """The short git commit of the code measured ("" outside a git checkout)."""
    import subprocess
    from pathlib import Path

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def markdown(df) -> str:
    """The cost block of docs/measures.md: one row per (model, batch, device, code), ratios to one gradient.
    CSVs from before the commit column hold the Lanczos-only code, whose ``eig_top (Lanczos)`` was the default."""
    if "commit" not in df:
        df = df.assign(commit="")
    df = df.assign(commit=df["commit"].fillna("").astype(str).replace("", "before 16c7057"))
    lines = ["| model, batch | device | code | one gradient | " + " | ".join(COLUMNS) + " |",
             "|---|---|---|---|" + "---|" * len(COLUMNS)]
    for (model, batch, device, code), g in df.groupby(["model", "batch", "device", "commit"], sort=False):
        u = dict(zip(g["operation"], g["units"]))
        ms = 1e3 * float(g.loc[g["operation"] == "gradient", "seconds"].iloc[0])
        cells = [f"{u[c]:.2f}×" if c in u else "" for c in COLUMNS]
        lines.append(f"| {model}, {batch} | {device} | {code} | {ms:.1f} ms | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
        "hvp (kept graph)": _kept_product(model, x, y, d),
        "eig_top (auto)": lambda: top_eigenvalue(model, x, y),
        "eig_top (Lanczos)": lambda: top_eigenvalue(model, x, y, solver="lanczos"),
    }


def _kept_product(model, x, y, d) -> Callable[[], object]:
    op = HessianOperator(model, x, y).build()
    return lambda: op(d)


def _dense_top(model, xd, yd, i: int, in_batch: bool) -> torch.Tensor:
    """Largest-magnitude eigenvalue of sample i's dense input Hessian, alone or inside the batch's forward."""
    import torch.nn.functional as F

    def loss(z):
        zi = z.reshape(1, *xd.shape[1:])
        if not in_batch:
            return F.cross_entropy(model(zi), yd[i:i + 1])
        return F.cross_entropy(model(torch.cat([xd[:i], zi, xd[i + 1:]])), yd, reduction="none")[i]

    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, xd[i].flatten()).double())
    return eig[eig.abs().argmax()]


def eig_accuracy(device: torch.device, batch: int) -> list[dict]:
    """eig_top (both solvers) against dense per-sample Hessians: small_cnn, digits test batch, float32/64."""
    from landscape.datasets import load_dataset
    from landscape.measures.curvature import _eigen

    x, y = load_dataset("digits", "test", n=batch)
    out = []
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = create_model("small_cnn").to(device=device, dtype=dtype).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        xd, yd = x.to(device=device, dtype=dtype), y.to(device)
        refs = {where: torch.stack([_dense_top(model, xd, yd, i, where == "in batch") for i in range(batch)]).cpu()
                for where in ("alone", "in batch")}
        for solver in ("auto", "lanczos"):
            ritz = _eigen(HessianOperator(model, xd, yd), xd, iters=30, tol=1e-3, seed=0, solver=solver)
            values = _top_from_ritz(ritz, xd)[0].double().cpu()
            row = {"model": "small_cnn (digits)", "dtype": str(dtype).replace("torch.", ""), "batch": batch,
                   "solver": ritz.solver}
            for where, exact in refs.items():
                rel = (values - exact).abs() / exact.abs()
                suffix = "" if where == "alone" else "_in_batch"
                row.update({f"median_rel_err{suffix}": float(rel.median()), f"max_rel_err{suffix}": float(rel.max())})
            row.update({"lanczos_steps": ritz.products, "hvp_samples_per_sample": ritz.sample_products / batch})
            out.append(row)
    return out


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
    return median_times(operations(model, x, y, d), device, repeats)


def round_times(ops: dict, device: torch.device, repeats: int) -> dict[str, list[float]]:
    """Seconds of each ``ops`` callable in each of ``repeats`` rounds, after one warm-up call each, timed
    round-robin so that every operation sees the same machine load (shared by the benchmarks that report
    ratios; pair the rounds to difference two operations)."""
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
    return times


def median_times(ops: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of each ``ops`` callable over :func:`round_times`."""
    return {k: statistics.median(v) for k, v in round_times(ops, device, repeats).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cases", default=",".join(c[0] for c in CASES), help="comma-separated model names")
    parser.add_argument("--accuracy-batch", type=int, default=64, help="digits batch for the eig_top accuracy")
    parser.add_argument("--out", default=None, help="write the ratios and the accuracy as CSV here")
    from bench_units import add_doc_options, doc_from_csvs  # (bench_units imports this module at its top)

    add_doc_options(parser, "cost")
    args = parser.parse_args(argv)
    if args.from_csv:
        return doc_from_csvs(args.from_csv, markdown, args.doc, DOC_BEGIN, DOC_END)
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
    accuracy = eig_accuracy(device, args.accuracy_batch)
    for r in accuracy:
        print(f"eig_top accuracy, {r['model']} {r['dtype']}, batch {r['batch']}, {r['solver']}: median rel. error "
              f"{r['median_rel_err']:.1e}, max {r['max_rel_err']:.1e} (in batch: {r['median_rel_err_in_batch']:.1e}, "
              f"{r['max_rel_err_in_batch']:.1e}; {r['lanczos_steps']} batched products, "
              f"{r['hvp_samples_per_sample']:.1f} products per sample)")
    print("ratios to one input gradient (lower is cheaper):")
    rows = []
    for name, res in results.items():
        for key, seconds in res.items():
            if key != "gradient":
                print(f"  {name:<16} {key:<24} {seconds / res['gradient']:6.2f}x")
            rows.append({"model": name, "operation": key, "seconds": seconds,
                         "units": seconds / res["gradient"], "device": label, "batch": args.batch,
                         "torch": torch.__version__, "commit": commit()})
    if args.out:
        import pandas as pd

        pd.DataFrame(rows).to_csv(args.out, index=False)
        pd.DataFrame(accuracy).assign(device=label, commit=commit()).to_csv(
            args.out.replace(".csv", "_accuracy.csv"), index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
