"""Cost of ``measure`` in units of one input gradient of the same batch, per column, side by side in one run.

For each model the operations below run interleaved (round-robin, ``--repeats`` rounds after a warm-up) and
the median time of each is divided by the median time of one input gradient (forward + backward of the
summed per-sample loss) of the same batch:

* ``pgd10``        — the PGD-10 attack alone: the floor of any adversarial table (about 10-11 units);
* ``base``         — ``measure(measures=[])``: PGD-10, clean loss/gradient, the forward pass at x_adv;
* ``+<measure>``   — ``measure(measures=[m]) − base`` for every selectable measure, the median over rounds of
  the difference within a round (its marginal cost; measures at the clean point share one kept Hessian
  graph, so their marginal costs overlap);
* ``default``      — ``measure()`` with the default set; ``all`` — every per-sample measure;
* ``weight_gradient`` — one gradient of the batch's mean loss with respect to the weights;
* ``weight_hvp``   — one weight-Hessian-vector product of the same loss on the kept graph
  (:class:`~landscape.measures.weight_hessian.WeightHessian`, the unit of every ``w_*`` measure; goal of
  issue 23: at most 2.5 gradients); the per-model ``w_*`` measures themselves are left out of ``+<measure>``
  and ``all`` (they run once per table, not per batch: ``benchmarks/bench_weight_space.py``).

The goal (issue 15): the default table within 2x the PGD floor. Writes a CSV with ``--out``; ``--doc FILE``
regenerates the marked cost block of docs/measures.md from the CSV(s) given with ``--from-csv`` (no
measurement then).

    python benchmarks/bench_units.py --out units_cpu.csv
    python benchmarks/bench_units.py --device cuda --batch 128 --repeats 5 --out units_cuda.csv
    python benchmarks/bench_units.py --from-csv units_cpu.csv units_cuda.csv --doc docs/measures.md
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch

from landscape import create_model
from landscape._base import per_sample_loss
from landscape.attacks import pgd
from landscape.measures import DEFAULT_MEASURES, measure, registry
from landscape.measures.weight_hessian import WeightHessian

from bench_measures import commit, round_times  # noqa: E402 (benchmarks/ is on sys.path when run as a script)

CASES = {
    "small_cnn": ({"in_channels": 1, "num_classes": 10, "input_size": 8}, (1, 8, 8)),
    "preact_resnet18": ({"num_classes": 10, "in_channels": 3}, (3, 32, 32)),
}
EPS = 8 / 255
OLD_CODE = "before 16c7057"  # rows of CSVs written before the commit column: Lanczos eig_top/hs
BEGIN, END = "<!-- units:begin (benchmarks/bench_units.py --doc) -->", "<!-- units:end -->"


def _gradient(model, x, y):
    xr = x.detach().requires_grad_(True)
    return torch.autograd.grad(per_sample_loss(model(xr), y).sum(), xr)[0]


#: the per-sample measures (the per-model w_* ones are timed as one weight HVP, see weight_operations)
MEASURES = tuple(s.name for s in registry.SPECS if s.scope == "sample")


def weight_operations(model, x, y) -> dict:
    """One weight gradient and one weight HVP (on the kept graph, built once outside the timing)."""
    op = WeightHessian(model, [(x, y)])
    op.graphs()
    v = torch.randn(op.n, generator=torch.Generator().manual_seed(1)).to(device=op.device, dtype=op.dtype)
    params = [p for p in model.parameters()]

    def weight_gradient():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        return torch.autograd.grad(loss, params)

    return {"weight_gradient": weight_gradient, "weight_hvp": lambda: op(v)}


def operations(model, x, y) -> dict:
    kw = dict(eps=EPS, steps=10, batch_size=x.shape[0], seed=0)
    ops = {
        "gradient": lambda: _gradient(model, x, y),
        "pgd10": lambda: pgd(model, x, y, EPS, steps=10, seed=0),
        "base": lambda: measure(model, x, y, measures=[], **kw),
        "default": lambda: measure(model, x, y, **kw),
        "all": lambda: measure(model, x, y, measures=list(MEASURES), **kw),
    }
    for m in MEASURES:
        ops[f"+{m}"] = (lambda m=m: measure(model, x, y, measures=[m], **kw))
    ops.update(weight_operations(model, x, y))
    return ops


def bench(name: str, *, batch: int, device: torch.device, repeats: int, weight_only: bool = False) -> list[dict]:
    kwargs, shape = CASES[name]
    torch.manual_seed(0)
    model = create_model(name, **kwargs).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    ops = ({"gradient": lambda: _gradient(model, x, y), **weight_operations(model, x, y)} if weight_only
           else operations(model, x, y))
    times = round_times(ops, device, repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    # a measure's marginal cost: the median over rounds of (its table - the base table) in the same round,
    # which cancels the slow drifts of a shared machine that a difference of two medians keeps
    if "base" in times:
        med.update({k: statistics.median(t - b for t, b in zip(v, times["base"])) + med["base"]
                    for k, v in times.items() if k.startswith("+")})
    unit = med["gradient"]
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for key, seconds in med.items():
        cost = seconds - med["base"] if key.startswith("+") else seconds
        rows.append({"model": name, "batch": batch, "device": label, "item": key, "seconds": cost,
                     "units": cost / unit, "default": key[1:] in DEFAULT_MEASURES if key.startswith("+") else None,
                     "torch": torch.__version__, "commit": commit()})
    return rows


def markdown(df: pd.DataFrame) -> str:
    """The cost block for docs/measures.md: one column per (model, device, batch), rows = items."""
    order = ["pgd10", "base"] + [f"+{m}" for m in MEASURES] + ["default", "all", "weight_gradient", "weight_hvp"]
    names = {"pgd10": "PGD-10 attack alone (the floor)", "base": "base: PGD-10 + clean loss/gradient + x_adv forward",
             "default": "**default table** (`measure()`)", "all": "all per-sample measures",
             "weight_gradient": "one weight gradient (mean loss)",
             "weight_hvp": "one weight-Hessian-vector product (`w_*` unit, kept graph)"}
    if "commit" not in df:
        df = df.assign(commit="")
    df = df.assign(commit=df["commit"].fillna("").astype(str).replace("", OLD_CODE))
    groups = list(df.groupby(["model", "device", "batch", "commit"], sort=False))
    head = "| | " + " | ".join(f"{m}, batch {b}, {d}, code {c}" for (m, d, b, c), _ in groups) + " |"
    lines = [head, "|---|" + "---|" * len(groups)]
    for item in order:
        cells = []
        for _, g in groups:
            row = g[g["item"] == item]
            cells.append(f"{float(row['units'].iloc[0]):.1f}" if len(row) else "")
        label = names.get(item, f"`{item[1:]}`" + (" (default)" if item[1:] in DEFAULT_MEASURES else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratio = []
    for (m, d, b, c), g in groups:
        u = dict(zip(g["item"], g["units"]))
        parts = []
        if "default" in u:
            parts.append(f"default = {u['default'] / u['pgd10']:.2f}x the PGD-10 floor")
        if "weight_hvp" in u and "weight_gradient" in u:
            parts.append(f"weight HVP = {u['weight_hvp'] / u['weight_gradient']:.2f} weight gradients")
        ratio.append(f"{m} on {d} (code {c}): " + ", ".join(parts))
    torch_versions = ", ".join(sorted(set(df["torch"].astype(str))))
    return "\n".join(lines) + "\n\n" + "; ".join(ratio) + f" (torch {torch_versions}).\n"


def add_doc_options(parser: argparse.ArgumentParser, block: str) -> None:
    """``--from-csv`` and ``--doc``, the options of :func:`doc_from_csvs`, for a benchmark's parser."""
    parser.add_argument("--from-csv", nargs="+", default=None, help="no measurement: read these CSVs (for --doc)")
    parser.add_argument("--doc", default=None, help=f"rewrite the marked {block} block of this Markdown file")


def doc_from_csvs(csvs: list[str], markdown_fn, doc: str | None, begin: str, end: str) -> int:
    """The ``--from-csv ... [--doc FILE]`` mode of the benchmarks: print ``markdown_fn`` of the concatenated
    CSVs and, with ``doc``, write it between the markers of that file."""
    block = markdown_fn(pd.concat([pd.read_csv(f) for f in csvs], ignore_index=True))
    print(block)
    if doc:
        write_doc(Path(doc), block, begin, end)
        print(f"updated {doc}")
    return 0


def write_csv(df: pd.DataFrame, out: str | None) -> None:
    """Write a benchmark's rows to ``out`` (its folder created; nothing when ``out`` is None) and say so."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
        print(f"wrote {out}")


def write_doc(doc: Path, block: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the text between the ``begin`` and ``end`` markers of ``doc`` by ``block``."""
    text = doc.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{doc} has no {begin} ... {end} block")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    doc.write_text(pattern.sub(lambda _: f"{begin}\n{block}{end}", text))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=None, help="default 32 on CPU, 128 on CUDA")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cases", default="small_cnn,preact_resnet18")
    p.add_argument("--out", default=None, help="write the table as CSV here")
    p.add_argument("--weight-only", action="store_true",
                   help="only the input gradient, one weight gradient and one weight HVP (no tables)")
    add_doc_options(p, "cost")
    args = p.parse_args(argv)
    if args.from_csv:
        df = pd.concat([pd.read_csv(f) for f in args.from_csv], ignore_index=True)
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        device = torch.device(args.device)
        batch = args.batch or (128 if device.type == "cuda" else 32)
        small = [c for c in args.cases.split(",") if c]
        rows = []
        for name in small:
            rows += bench(name, batch=batch if name == "small_cnn" or device.type == "cuda" else min(batch, 8),
                          device=device, repeats=args.repeats, weight_only=args.weight_only)
        df = pd.DataFrame(rows)
        write_csv(df, args.out)
    block = markdown(df)
    print(block)
    if args.doc:
        write_doc(Path(args.doc), block)
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
