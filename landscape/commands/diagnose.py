"""`landscape diagnose`: robust-overfitting summary of a trajectory table or run directory."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ._common import non_negative_float

HELP = "summarise robust overfitting (best epoch, gap, onset, correlations) from a trajectory table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", metavar="TABLE|RUN_DIR",
                   help="trajectory.parquet, metrics.csv, or a run directory holding one of them")
    p.add_argument("--split", default="test", choices=["train", "test"], help="evaluation split (default test)")
    p.add_argument("--threshold", type=non_negative_float, default=None,
                   help="onset threshold in accuracy points (default max(1, 2 x standard error))")
    p.add_argument("--log", default=None, metavar="METRICS_CSV",
                   help="training log giving the best epoch (default: metrics.csv in the run folder, its parent "
                        "for an analysis folder, or beside the checkpoints; 'none' to use the table itself)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from landscape.diagnose import TRAINING_LOG, diagnose, diagnosis_of, read_table, read_training_log  # lazy
    from landscape.runs import Run, find_runs  # lazy: start-up (pandas)

    if Path(args.table).is_dir() and args.log is None:  # run folders: each one's own diagnosis, with its log
        own = Run(args.table)
        if own.find("trajectory") is None and own.find("metrics") is not None:  # a training log alone
            results = [diagnosis_of(own, split=args.split, threshold=args.threshold)]
        else:
            runs = find_runs(args.table)
            results = [diagnosis_of(Run(r.folder, name=r.name), split=args.split, threshold=args.threshold)
                       for r in runs]
            if len(runs) > 1:  # named by their folders, as the report names them
                results = [dataclasses.replace(d, run=r.name) for d, r in zip(results, runs)]
    else:
        table = read_table(args.table)
        several = "run" in table.columns and table["run"].nunique() > 1
        if args.log == "none":
            log = None
        elif args.log is not None:
            log = read_table(args.log)
        elif table.attrs.get("source") == TRAINING_LOG:  # the table is the training log itself
            log = table
        else:
            log = read_training_log(args.table, table=table)
        parts = [table[table["run"] == r] for r in table["run"].dropna().unique()] if several else [table]
        if log is not None and len(parts) > 1:
            log = None  # one log cannot belong to several runs
        results = [diagnose(part, split=args.split, threshold=args.threshold, log=log) for part in parts]
    if args.json:
        payload = results[0].to_dict() if len(results) == 1 else [d.to_dict() for d in results]
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        print("\n\n".join(d.summary() for d in results))
    return 0
