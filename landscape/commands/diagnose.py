"""`landscape diagnose`: robust-overfitting summary of a trajectory table or run directory."""
from __future__ import annotations

import argparse
import json

from ._common import non_negative_float

HELP = "summarise robust overfitting (best epoch, gap, onset, correlations) from a trajectory table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", metavar="TABLE|RUN_DIR",
                   help="trajectory.parquet, metrics.csv, or a run directory holding one of them")
    p.add_argument("--split", default="test", choices=["train", "test"], help="evaluation split (default test)")
    p.add_argument("--threshold", type=non_negative_float, default=None,
                   help="onset threshold in accuracy points (default max(1, 2 x standard error))")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from landscape.diagnose import diagnose, read_table

    table = read_table(args.table)
    if "run" in table.columns and table["run"].nunique() > 1:
        parts = [table[table["run"] == r] for r in table["run"].dropna().unique()]
    else:
        parts = [table]
    results = [diagnose(part, split=args.split, threshold=args.threshold) for part in parts]
    if args.json:
        payload = results[0].to_dict() if len(results) == 1 else [d.to_dict() for d in results]
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        print("\n\n".join(d.summary() for d in results))
    return 0
