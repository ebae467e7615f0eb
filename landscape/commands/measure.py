"""`landscape measure`: per-sample input-landscape measures of one checkpoint -> Parquet or CSV."""
from __future__ import annotations

import argparse

from ._common import (add_attack_args, add_data_args, add_measure_args, add_model_args, attack_from_args, built_arch,
                      dataset_from_args, eps_text, measure_settings_from_args, model_from_args, resolve_eps,
                      table_out)
from ._summary import print_summary

HELP = "per-sample input-landscape measures (gradient norms, curvature, Taylor gap, logit variation) of a checkpoint"

FORMATS = (".parquet", ".csv")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint file")
    add_model_args(p)
    add_data_args(p)
    add_attack_args(p)
    add_measure_args(p)
    p.add_argument("--out", required=True, help="output table: .parquet or .csv")


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
    from landscape.runs import write_file  # lazy: start-up (pandas)
    from landscape.measures import measure  # lazy: start-up (torch)

    out = table_out(args.out, FORMATS)
    options = measure_settings_from_args(args)  # unknown names fail before the model is loaded
    data = dataset_from_args(args)
    resolve_eps(args, data.info)
    attack = attack_from_args(args)
    model = model_from_args(args, args.checkpoint, data=data)
    df = measure(model, data, settings=attack, options=options, progress=not args.quiet, device=args.device,
                 workers=args.data_workers)
    df.attrs.update(checkpoint=str(args.checkpoint), arch=built_arch(model, args), data=args.data, split=args.split)
    df["eps"] = args.eps  # the table records the radius it was measured at
    write_file(out, df, attrs=True)  # the table names its settings when it travels alone
    print(summary(df))
    if df.attrs.get("nonfinite"):
        print(f"warning: {df.attrs['nonfinite']} NaN/Inf values in the table")
    print_summary("measure", [(out, len(df))], details=[f"{len(df)} samples of {args.data} {args.split}, "
                                                         f"{built_arch(model, args)}, {args.attack} attack, {eps_text(args)}"])
    return 0
