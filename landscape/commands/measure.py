"""`landscape measure`: per-sample input-landscape measures of one checkpoint -> Parquet or CSV."""
from __future__ import annotations

import argparse

from landscape._io import atomic_write
from ._common import (add_attack_args, add_data_args, add_model_args, built_arch, dataset_from_args, eps_text,
                      model_from_args, positive_int, resolve_eps, table_out)
from ._names import DEFAULT_MEASURES, MEASURES
from ._summary import print_summary

HELP = "per-sample input-landscape measures (gradient norms, curvature, Taylor gap, logit variation) of a checkpoint"

FORMATS = (".parquet", ".csv")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint file")
    add_model_args(p)
    add_data_args(p)
    add_attack_args(p)
    g = p.add_argument_group("measures")
    g.add_argument("--measures", default=",".join(DEFAULT_MEASURES),
                   help=f"comma-separated names from {','.join(MEASURES)} "
                        f"(default: {','.join(DEFAULT_MEASURES)})")
    g.add_argument("--eig-iters", type=positive_int, default=20,
                   help="most Lanczos steps for eig_top on smooth nets (ReLU nets: exact, no steps; default 20)")
    g.add_argument("--float64", action="store_true", help="compute in float64 (precise curvature; slower)")
    g.add_argument("--out", required=True, help="output table: .parquet or .csv")


def summary(df) -> str:
    """Means of the numeric columns (accuracies for the correctness columns), one per line."""
    lines = [f"{len(df)} samples"]
    for col in df.columns:
        if col in ("sample", "label", "eps"):
            continue
        name = col.replace("correct_", "acc_")
        lines.append(f"  {name:<12} {float(df[col].mean()):.6g}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch  # lazy: start-up (here and below: torch, pandas)

    from landscape.measures import measure  # lazy: start-up
    from landscape.measures.table import columns  # lazy: start-up

    out = table_out(args.out, FORMATS)
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    columns(measures)  # unknown names fail before the model is loaded
    data = dataset_from_args(args)
    resolve_eps(args, data.info)
    model = model_from_args(args, args.checkpoint, data=data)
    df = measure(model, data, eps=args.eps, attack=args.attack, steps=args.steps, step_size=args.step_size,
                 norm=args.norm, measures=measures, batch_size=args.batch_size, seed=args.seed,
                 eig_iters=args.eig_iters, progress=not args.quiet,
                 dtype=torch.float64 if args.float64 else None, device=args.device, workers=args.data_workers)
    df.attrs.update(checkpoint=str(args.checkpoint), arch=built_arch(model, args), data=args.data, split=args.split)
    df["eps"] = args.eps  # the table records the radius it was measured at
    if out.suffix.lower() == ".csv":
        atomic_write(out, lambda tmp: df.to_csv(tmp, index=False))
    else:
        atomic_write(out, lambda tmp: df.to_parquet(tmp, index=False))
    print(summary(df))
    if df.attrs.get("nonfinite"):
        print(f"warning: {df.attrs['nonfinite']} NaN/Inf values in the table")
    print_summary("measure", [(out, len(df))], details=[f"{len(df)} samples of {args.data} {args.split}, "
                                                         f"{built_arch(model, args)}, {eps_text(args)}"])
    return 0
