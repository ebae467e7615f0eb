"""`landscape demo`: the digits robust-overfitting study (what `make demo` runs)."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ._common import positive_int

HELP = "train 4 methods on digits with label noise, analyse their trajectories, write report.html"

SCRIPT = Path(__file__).resolve().parents[2] / "analyses" / "digits_robust_overfitting.py"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED", help="seeds (default: 0 1 2)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default 150)")
    p.add_argument("--every", type=positive_int, default=None,
                   help="analyse every k-th checkpoint, plus the first, best and last (default 10)")
    p.add_argument("--jobs", type=positive_int, default=None, help="parallel processes (default 2)")
    p.add_argument("--clean", action="store_true", help="no label noise (clean digits do not robust-overfit)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")


def load_script():
    """Import ``analyses/digits_robust_overfitting.py`` from the source checkout."""
    if not SCRIPT.is_file():
        raise FileNotFoundError(f"the demo script {SCRIPT} is not there: `landscape demo` needs the source "
                                "checkout (pip install -e .)")
    spec = importlib.util.spec_from_file_location("digits_robust_overfitting", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> int:
    argv = ["--out", str(args.out)]
    if args.seeds:
        argv += ["--seeds", *map(str, args.seeds)]
    for flag in ("epochs", "every", "jobs"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    argv += [f for f, on in (("--clean", args.clean), ("--quick", args.quick), ("--quiet", args.quiet)) if on]
    return load_script().main(argv)
