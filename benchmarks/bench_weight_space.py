"""Weight-Hessian top eigenvalue and trace: landscape against the PyPI ``pyhessian``, same model and batch,
side by side in one run.

For each case the same model (a copy for each tool: pyhessian writes ``.grad`` into the model it is given)
and batch go to:

* ``pyhessian``: ``hessian(model, criterion, data=(x, y), cuda=False)`` then ``.eigenvalues()`` (power
  iteration, relative-change tolerance 1e-3, at most 100 steps) and ``.trace(maxIter=30, tol=0)``
  (Hutchinson with exactly 30 Rademacher probes: its own stopping rule, a relative change of the running mean
  below 1e-3, can stop after 2 probes); the constructor's gradient graph is timed with each call, as
  landscape's operator builds its own.
* ``landscape``: :func:`~landscape.measures.weight_hessian.top_eigenvalues` (Lanczos with full
  reorthogonalisation, relative residual tolerance 1e-3, the table's setting) and
  :func:`~landscape.measures.weight_hessian.hutchinson_trace` with the same 30 probes (the same
  estimator, so the same accuracy in expectation); and a second eigenvalue row at *matched
  accuracy*: the loosest Lanczos tolerance (of 0.3, 0.1, 0.03, 0.01, 1e-3) whose eigenvalue is at least as
  close to the reference as pyhessian's first answer (and within 1e-3). pyhessian starts from a new random
  vector each round: its error and HVP count are medians over the rounds.

Accuracy: the eigenvalue of both is compared with a reference from Lanczos run to a residual of 1e-9; the two
traces must agree within 3 combined standard errors (pyhessian's SE computed from the per-probe values it
returns). Times are medians over ``--repeats`` interleaved rounds, wall and process CPU seconds; on a CPU the
speed-up is the ratio of CPU seconds (the machine may be shared: other processes stretch wall time, not the
CPU time of this one), on a GPU of wall seconds. The HVP counts are the machine-independent part of the
comparison. CPU-only unless ``--device cuda`` (pyhessian's ``cuda=True`` then).

    python benchmarks/bench_weight_space.py --out benchmarks/results/weight_space_cpu.csv
    python benchmarks/bench_weight_space.py --from-csv benchmarks/results/weight_space_cpu.csv --doc docs/measures.md

pyhessian is a benchmark-only dependency (``pip install -e .[bench]``); the package never imports it.
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from landscape import create_model
from landscape.measures.weight_hessian import WeightHessian, hutchinson_trace, top_eigenvalues

from bench_measures import commit  # noqa: E402 (benchmarks/ is on sys.path when run as a script)
from bench_units import add_doc_options, doc_from_csvs, write_csv

BEGIN = "<!-- weight-space:begin (benchmarks/bench_weight_space.py --doc) -->"
END = "<!-- weight-space:end -->"
CASES = {
    # name: (create_model arguments, input shape, batch)
    "small_cnn_16": ({"in_channels": 3, "num_classes": 10, "input_size": 16, "width": 16}, (3, 16, 16), 64),
    "mlp_256": ({"input_shape": (1, 8, 8), "hidden": (256, 256), "activation": "softplus"}, (1, 8, 8), 128),
}
ARCH = {"small_cnn_16": "small_cnn", "mlp_256": "mlp"}
EIG_TOL = 1e-3
TRACE_PROBES = 30


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device):
    """((wall seconds, process CPU seconds), fn()): on a shared CPU the process's CPU time is the steadier
    measure of the work done (other processes stretch the wall time, not it)."""
    _sync(device)
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return (time.perf_counter() - t, time.process_time() - c), out


def pyhessian_eig(model: nn.Module, x, y, device):
    """pyhessian's top eigenvalue and the number of Hessian-vector products it took (counted by wrapping its
    module's ``hessian_vector_product``)."""
    import importlib

    ph = importlib.import_module("pyhessian.hessian")  # benchmark-only dependency (the module, not the class)

    calls = {"n": 0}
    real = ph.hessian_vector_product

    def counted(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    ph.hessian_vector_product = counted
    try:
        h = ph.hessian(copy.deepcopy(model), nn.CrossEntropyLoss(), data=(x, y), cuda=device.type == "cuda")
        values, _ = h.eigenvalues(top_n=1)
    finally:
        ph.hessian_vector_product = real
    return float(values[0]), calls["n"]


def pyhessian_trace(model: nn.Module, x, y, device, probes: int):
    """pyhessian's per-probe values vᵀHv for exactly ``probes`` probes (its early stop turned off)."""
    from pyhessian import hessian  # benchmark-only dependency

    h = hessian(copy.deepcopy(model), nn.CrossEntropyLoss(), data=(x, y), cuda=device.type == "cuda")
    # tol=-inf: its stopping test divides by the running mean, so a negative mean would stop it even at tol=0
    return [float(v) for v in h.trace(maxIter=probes, tol=float("-inf"))]


def ours_eig(model, x, y, tol=EIG_TOL, max_steps=100):
    r = top_eigenvalues(WeightHessian(model, [(x, y)]), 1, tol=tol, max_steps=max_steps, seed=0)
    return float(r.values[0]), r.steps


def ours_trace(model, x, y, samples: int):
    return hutchinson_trace(WeightHessian(model, [(x, y)]), rtol=0.0, min_samples=samples, max_samples=samples,
                            seed=0)


def bench(name: str, device: torch.device, repeats: int) -> list[dict]:
    kwargs, shape, batch = CASES[name]
    torch.manual_seed(0)
    model = create_model(ARCH[name], **kwargs).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    n = sum(p.numel() for p in model.parameters())
    reference, ref_steps = ours_eig(model, x, y, tol=1e-9, max_steps=300)
    # matched accuracy: the loosest Lanczos tolerance whose eigenvalue is at least as accurate as pyhessian's
    # (calibrated once, untimed)
    p_value, _ = pyhessian_eig(model, x, y, device)
    p_err = abs(p_value / reference - 1)
    matched_tol = EIG_TOL
    for tol in (0.3, 0.1, 0.03, 0.01, EIG_TOL):
        if abs(ours_eig(model, x, y, tol=tol)[0] / reference - 1) <= min(p_err, 1e-3):
            matched_tol = tol
            break
    times = {"pyhessian_eig": [], "ours_eig": [], "ours_eig_matched": [], "pyhessian_trace": [], "ours_trace": []}
    eig_m, steps_m = None, 0
    eig_p = eig_o = None
    p_hvps, p_errs = [], []
    steps_o = 0
    probes: list[float] = []
    trace_o = None
    for _ in range(repeats):
        t, (eig_p, hvps_p) = _timed(lambda: pyhessian_eig(model, x, y, device), device)
        times["pyhessian_eig"].append(t)
        p_hvps.append(hvps_p)
        p_errs.append(abs(eig_p / reference - 1))
        t, (eig_o, steps_o) = _timed(lambda: ours_eig(model, x, y), device)
        times["ours_eig"].append(t)
        t, (eig_m, steps_m) = _timed(lambda: ours_eig(model, x, y, tol=matched_tol), device)
        times["ours_eig_matched"].append(t)
        t, probes = _timed(lambda: pyhessian_trace(model, x, y, device, TRACE_PROBES), device)
        times["pyhessian_trace"].append(t)
        t, trace_o = _timed(lambda: ours_trace(model, x, y, TRACE_PROBES), device)
        times["ours_trace"].append(t)
    med = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    key = cpu if device.type == "cpu" else med  # the speed-up: CPU time on a CPU, wall time on a GPU
    a = np.asarray(probes)
    trace_p, se_p = float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    common = {"case": name, "params": n, "batch": batch, "device": label, "torch": torch.__version__,
              "commit": commit()}
    return [
        {**common, "quantity": "top eigenvalue", "reference": reference, "reference_steps": ref_steps,
         "pyhessian": eig_p, "landscape": eig_o, "pyhessian_rel_err": statistics.median(p_errs),
         "landscape_rel_err": abs(eig_o / reference - 1), "landscape_hvps": steps_o,
         "pyhessian_hvps": statistics.median(p_hvps),
         "landscape_tol": EIG_TOL, "pyhessian_s": med["pyhessian_eig"], "landscape_s": med["ours_eig"],
         "pyhessian_cpu_s": cpu["pyhessian_eig"], "landscape_cpu_s": cpu["ours_eig"],
         "speedup": key["pyhessian_eig"] / key["ours_eig"]},
        {**common, "quantity": "top eigenvalue, matched accuracy", "reference": reference,
         "reference_steps": ref_steps, "pyhessian": eig_p, "landscape": eig_m,
         "pyhessian_rel_err": statistics.median(p_errs), "landscape_rel_err": abs(eig_m / reference - 1),
         "landscape_hvps": steps_m, "pyhessian_hvps": statistics.median(p_hvps), "landscape_tol": matched_tol,
         "pyhessian_s": med["pyhessian_eig"], "landscape_s": med["ours_eig_matched"],
         "pyhessian_cpu_s": cpu["pyhessian_eig"], "landscape_cpu_s": cpu["ours_eig_matched"],
         "speedup": key["pyhessian_eig"] / key["ours_eig_matched"]},
        {**common, "quantity": "trace", "pyhessian": trace_p, "pyhessian_se": se_p, "landscape": trace_o.trace,
         "landscape_se": trace_o.se, "probes": int(a.size),
         "agree_3se": bool(abs(trace_p - trace_o.trace) <= 3 * math.hypot(se_p, trace_o.se)),
         "pyhessian_s": med["pyhessian_trace"], "landscape_s": med["ours_trace"],
         "pyhessian_cpu_s": cpu["pyhessian_trace"], "landscape_cpu_s": cpu["ours_trace"],
         "speedup": key["pyhessian_trace"] / key["ours_trace"]},
    ]


def markdown(df: pd.DataFrame) -> str:
    """The block for docs/measures.md: one row per case and quantity."""
    lines = ["| case (params, batch, device) | quantity | pyhessian | landscape | agreement | pyhessian s (CPU s) | "
             "landscape s (CPU s) | speed-up |", "|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        case = f"{r['case']} ({int(r['params']):,}, {int(r['batch'])}, {r['device']})"
        if r["quantity"] == "trace":
            ours = f"{r['landscape']:.4g} ± {r['landscape_se']:.2g}"
            theirs = f"{r['pyhessian']:.4g} ± {r['pyhessian_se']:.2g}"
            agree = f"{'within' if r['agree_3se'] else 'NOT within'} 3 SE ({int(r['probes'])} probes each)"
        else:
            ours = (f"{r['landscape']:.6g} (rel. err {r['landscape_rel_err']:.1e}, tol {r['landscape_tol']:g}, "
                    f"{int(r['landscape_hvps'])} HVPs)")
            theirs = (f"{r['pyhessian']:.6g} (rel. err {r['pyhessian_rel_err']:.1e}, {r['pyhessian_hvps']:g} HVPs; "
                      f"medians over rounds)")
            agree = f"reference {r['reference']:.6g} (Lanczos, residual 1e-9)"
        lines.append(f"| {case} | {r['quantity']} | {theirs} | {ours} | {agree} | {r['pyhessian_s']:.3g} "
                     f"({r['pyhessian_cpu_s']:.3g}) | {r['landscape_s']:.3g} ({r['landscape_cpu_s']:.3g}) | "
                     f"{r['speedup']:.2f}x |")
    versions = ", ".join(sorted(set(df["torch"].astype(str))))
    codes = ", ".join(sorted(set(df["commit"].fillna("").astype(str)) - {""})) or "uncommitted"
    return "\n".join(lines) + (f"\n\n(torch {versions}; code {codes}; medians of the interleaved rounds; wall and "
                                f"process CPU seconds; the speed-up is in CPU seconds on a CPU, wall seconds on a "
                                f"GPU.)\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--out", default=None, help="write the table as CSV here")
    add_doc_options(p, "weight-space")
    args = p.parse_args(argv)
    if args.from_csv:
        return doc_from_csvs(args.from_csv, markdown, args.doc, BEGIN, END)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in [c for c in args.cases.split(",") if c]:
        rows += bench(name, device, args.repeats)
    df = pd.DataFrame(rows)
    write_csv(df, args.out)
    print(markdown(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
