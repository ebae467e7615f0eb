"""`landscape demo`: the digits robust-overfitting study and its claims table (what `make demo` runs)."""
from __future__ import annotations

import argparse

from ._common import positive_int
from ._names import DEFAULT_VARIANTS, STUDIES, VARIANTS

HELP = "train the study's variants on digits with label noise, analyse them, write claims.csv and report.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", default="robust_overfitting", choices=["robust_overfitting", *STUDIES],
                   help="the default robust-overfitting demo, 'methods' (AdvLC against TRADES, MART, AWP, CURE, "
                        "LLR: robustness and cost) or 'attribution' (which training samples drive RO); resumable")
    p.add_argument("--out", default=None, help="output folder (default runs/demo; runs/<study> for the others)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED", help="seeds (default: 0 1 2)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default 150)")
    p.add_argument("--methods", nargs="+", default=None, choices=list(VARIANTS), metavar="VARIANT",
                   help=f"variants to train (default: {' '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--every", type=positive_int, default=None,
                   help="keep and analyse every k-th checkpoint, plus the first, best and last (default 10)")
    p.add_argument("--jobs", type=positive_int, default=None, help="parallel processes (default 2)")
    p.add_argument("--clean", action="store_true", help="no label noise (clean digits do not robust-overfit)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")


def run(args: argparse.Namespace) -> int:
    from landscape.study.experiments import main  # lazy: start-up (torch, matplotlib)

    argv = ["--study", args.study] + (["--out", str(args.out)] if args.out else [])
    if args.seeds:
        argv += ["--seeds", *map(str, args.seeds)]
    if args.methods:
        argv += ["--methods", *args.methods]
    for flag in ("epochs", "every", "jobs"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    argv += [f for f, on in (("--clean", args.clean), ("--quick", args.quick), ("--quiet", args.quiet),
                             ("--no-report", args.no_report)) if on]
    return main(argv)
