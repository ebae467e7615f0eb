"""`landscape trajectory`: measure every checkpoint of a run into a resumable run directory."""
from __future__ import annotations

import argparse
import sys

from ._common import (add_attack_args, add_data_args, add_final_eval_args, add_measure_args, add_model_args,
                      attack_from_args, data_info, eps_text, measure_settings_from_args, model_kwargs, normalization,
                      output_dir, positive_int, resolve_eps, run_final_eval, warn_trusted)
from ._names import EXECUTORS
from ._summary import print_summary

HELP = "measure every checkpoint of a training run (resumable; serial, process or Ray workers)"


def _name_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINTS",
                   help="checkpoint directory, glob pattern (quoted) or checkpoint files")
    p.add_argument("--out", required=True, help="run directory to write (re-running it resumes)")
    add_model_args(p)
    add_data_args(p, helps={"split": "measure only this split (shorthand for --splits SPLIT)"})
    add_attack_args(p)
    add_measure_args(p)
    p.set_defaults(split=None)  # the shared --split means "only this split" here
    g = p.add_argument_group("trajectory")
    g.add_argument("--splits", type=_name_list, default=None, metavar="LIST",
                   help="comma-separated splits to measure (default train,test)")
    g.add_argument("--executor", default="serial", choices=list(EXECUTORS))
    g.add_argument("--workers", type=positive_int, default=None,
                   help="parallel workers (process or ray; default: one per GPU for --executor process "
                        "--device cuda, else 1)")
    g.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads per worker (default: cores // workers)")
    g.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")
    g.add_argument("--run", default=None, help="run name in the table (default: the checkpoint folder's name)")
    g.add_argument("--histories", type=_name_list, nargs="?", const=["train"], default=None, metavar="LIST",
                   help="also write histories.parquet: per-sample, per-epoch rows with stable sample ids for these "
                        "splits (default train), what `landscape attribute` ranks")
    add_final_eval_args(p)


def run(args: argparse.Namespace) -> int:
    from landscape.diagnose import diagnose, read_training_log  # lazy: start-up (here and below: torch, pandas)
    from landscape.runs import run_file  # lazy: start-up
    from landscape.trajectory import analyse_trajectory  # lazy: start-up

    if args.split is not None and args.splits is not None:
        raise ValueError("give --split or --splits, not both")
    if args.checkpoint_entry is not None:
        raise ValueError("--checkpoint-entry applies to one checkpoint (measure, slice, evaluate); a trajectory reads "
                         "the 'last' entry of {'last', 'best'} files")
    splits = [args.split] if args.split is not None else (args.splits or ["train", "test"])
    info = data_info(args)
    resolve_eps(args, info)
    attack, options = attack_from_args(args), measure_settings_from_args(args)
    mean, std = normalization(args)
    if args.trust_checkpoint:
        warn_trusted(" ".join(args.checkpoints))
    out = output_dir(args.out)
    source = args.checkpoints[0] if len(args.checkpoints) == 1 else args.checkpoints
    table = analyse_trajectory(
        source, args.arch, args.data, out_dir=out, attack=attack, options=options, n=args.n, splits=splits,
        data_root=args.data_root, data_args=dict(args.data_arg), executor=args.executor, workers=args.workers,
        threads=args.threads, ray_address=args.ray_address, trusted=args.trust_checkpoint, run=args.run,
        progress=not args.quiet, arch_kwargs=model_kwargs(args, info), mean=mean, std=std, device=args.device,
        histories=args.histories or False)
    a = table.attrs
    total = a["computed"] + a["reused"]
    print(f"trajectory: {total} checkpoint(s) ({a['computed']} computed, {a['reused']} reused), "
          f"{a['failed']} failed -> {out / 'trajectory.parquet'}")
    print_summary("trajectory", [(out / run_file("trajectory"), len(table))]
                  + [p for p in (out / run_file("diagnosis"), out / run_file("histories")) if p.exists()], details=[f"{args.attack} attack, {eps_text(args)}"])
    ok = table[table["error"].isna()]
    if len(ok) and "test" in set(ok["split"]):
        print(diagnose(table, log=read_training_log(table=table)).summary())
        run_final_eval(args, table, out)
    if a["failed"]:
        print(f"landscape trajectory: {a['failed']} checkpoint(s) failed (see the error column):",
              file=sys.stderr)
        for path in a["failed_checkpoints"]:
            err = table.loc[table["checkpoint"] == path, "error"].iloc[0]
            print(f"  {err}" if path in err else f"  {path}: {err}", file=sys.stderr)
        return 1
    return 0
