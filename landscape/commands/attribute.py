"""`landscape attribute`: rank a run's training samples by how they drive robust overfitting."""
from __future__ import annotations

import argparse

from ._common import positive_int, table_out

HELP = "rank the training samples of a trajectory run folder by attribution scores (memorisation, curvature, ...)"
#: landscape.attribution.SCORES (checked by tests/test_attribution.py)
SCORES = ("memorisation", "curvature_growth", "learning_epoch", "combined")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a folder written by `landscape trajectory` (its histories.parquet, built from results/ "
                        "when missing), or a history table (.parquet/.csv, then --best-epoch is required)")
    p.add_argument("--top", type=positive_int, default=20, metavar="K", help="rows to print (default 20)")
    p.add_argument("--by", default="combined", choices=SCORES, help="ranking score (default combined)")
    p.add_argument("--best-epoch", type=positive_int, default=None, metavar="E",
                   help="best epoch (default: the official rule on the run's training log / trajectory)")
    p.add_argument("--split", default="train", choices=["train", "test"], help="split ranked (default train)")
    p.add_argument("--out", default=None, metavar="CSV", help="write the whole ranking (every sample) as CSV")


def run(args: argparse.Namespace) -> int:
    from landscape.attribution import attribute  # lazy: start-up (pandas, torch)
    from landscape.runs import write_file

    out = table_out(args.out, (".csv",)) if args.out else None
    ranked = attribute(args.run_dir, best_epoch=args.best_epoch, by=args.by, split=args.split)
    if out is not None:
        write_file(out, ranked)
    a = ranked.attrs
    print(f"{a['n_samples']} {a['split']} samples, epochs {a['epochs'][0]}..{a['last_epoch']} "
          f"({len(a['epochs'])} analysed), best epoch {a['best_epoch']}"
          + (f" (nearest analysed: {a['best_epoch_used']})" if a["best_epoch_used"] != a["best_epoch"] else "")
          + f", ranked by {a['by']}")
    cols = ["rank", "sample_id", "label", "memorisation", "curvature_growth", "learning_epoch", "combined"]
    shown = ranked[cols].head(args.top)
    shown["learning_epoch"] = [("never" if v != v else int(v)) for v in ranked["learning_epoch"].head(args.top)]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if out is not None:
        print(f"wrote {out}")
    return 0
