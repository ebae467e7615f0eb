"""`landscape evaluate`: clean, PGD-10 and AutoAttack accuracy of checkpoints -> one row per checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (add_data_args, add_eval_attack_args, add_model_args, checkpoint_loader, dataset_from_args,
                      eps_text, eps_value, pgd_settings, resolve_eps, table_out)

HELP = "robust accuracy of checkpoints: clean, PGD-10 (official settings) and AutoAttack (pyautoattack)"

FORMATS = (".csv", ".parquet")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint files")
    add_model_args(p)
    add_data_args(p, default_n=None)
    g = p.add_argument_group("evaluation")
    g.add_argument("--attack", default="pgd", choices=["pgd", "autoattack"],
                   help="pgd: clean + PGD accuracy; autoattack: also AutoAttack (slow)")
    g.add_argument("--eps", type=eps_value, default=None,
                   help="radius in [0,1] pixel units (default: the dataset's: 8/255 for CIFAR, SVHN, Tiny-ImageNet "
                        "and image folders, 0.1 for digits)")
    g.add_argument("--norm", default="linf", choices=["linf", "l2"])
    add_eval_attack_args(g)
    g.add_argument("--out", required=True, help="output table: .csv or .parquet")


def run(args: argparse.Namespace) -> int:
    from landscape.runs import write_file  # lazy: start-up (pandas)
    from landscape.evaluate import evaluate_checkpoints  # lazy: start-up (torch, pandas)

    out = table_out(args.out, FORMATS)
    for path in args.checkpoints:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such checkpoint file: {path}")
    data = dataset_from_args(args)
    resolve_eps(args, data.info)
    table = evaluate_checkpoints(args.checkpoints, checkpoint_loader(args, data), data, None, progress=not args.quiet,
                                 attack=args.attack, eps=args.eps, norm=args.norm,
                                 pgd=pgd_settings(args, args.eps, args.norm), version=args.aa_version,
                                 batch_size=args.batch_size, seed=args.seed)
    table.insert(2, "data", args.data)
    table.insert(3, "split", args.split)
    write_file(out, table, attrs=True)  # the table names its settings when it travels alone
    shown = [c for c in ("epoch", "acc_clean", "acc_pgd", "acc_autoattack") if c in table.columns]
    for rec in table.to_dict("records"):
        print(f"{Path(rec['checkpoint']).name}: " + ", ".join(
            f"{c} {rec[c]}" if c == "epoch" else f"{c} {100 * rec[c]:.1f}%" for c in shown))
    print(f"wrote {out} ({len(data)} samples of {args.data} {args.split}, {eps_text(args)})")
    return 0
