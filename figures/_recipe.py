"""Shared plumbing of the figure recipes: arguments, loading run tables, saving.

Every recipe takes run directories (or table files) and ``--out``; ``--synthetic`` draws from made-up
tables instead (see ``landscape.testing``), which is how the thumbnails were rendered before real demo runs
existed. Every recipe draws a figure kind of the registry (``landscape.plotting.FIGURES``) with :func:`draw`,
so a recipe, ``landscape plot KIND`` and the report show the same figure.
"""
from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from pathlib import Path

from landscape.diagnose import run_diagnoses
from landscape.plotting import figure_spec, save_figure
from landscape.runs import load_tables
from landscape.testing import write_synthetic_run

#: Synthetic stand-ins for runs/demo: (name, robust-overfitting strength).
SYNTHETIC_RUNS = (("pgd_at", 1.0), ("at_advlc", 0.2))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("runs", nargs="*", help="run directories (or table files); several are overlaid as runs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--synthetic", action="store_true", help="use synthetic demo tables (no runs needed)")
    p.add_argument("--format", dest="formats", nargs="+", default=["png", "pdf"], help="png pdf svg")
    p.add_argument("--dpi", type=int, default=160)
    return p


def run_paths(args: argparse.Namespace) -> list[Path]:
    """The run folders to read: the given ones, or freshly written synthetic ones with ``--synthetic``."""
    if args.synthetic:
        root = Path(tempfile.mkdtemp(prefix="landscape-synthetic-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        return [write_synthetic_run(root / name, ro=ro, seed=i)
                for i, (name, ro) in enumerate(SYNTHETIC_RUNS)]
    if not args.runs:
        raise SystemExit("give run directories (or --synthetic)")
    return [Path(r) for r in args.runs]


def load(args: argparse.Namespace, key: str, *, best_last: bool = False):
    """The combined ``key`` table of the runs; with ``best_last`` only each run's best and last epoch."""
    from landscape.plotting import label_epochs

    paths = run_paths(args) if not hasattr(args, "_paths") else args._paths
    args._paths = paths
    table = load_tables(paths, key)
    if best_last:
        folders = [p if p.is_dir() else p.parent for p in paths]
        epochs = {r: {"best": d.best_epoch, "last": d.last_epoch}  # as `landscape plot --best-last`
                  for r, d in run_diagnoses(folders).items() if d.best_epoch is not None}
        table = label_epochs(table, next(iter(epochs.values())) if len(paths) == 1 else epochs)
    return table


def draw(args: argparse.Namespace, kind: str, **options):
    """The registered figure ``kind`` drawn from the runs' table (each run's best and last epoch when the
    figure compares them); ``options`` as for ``landscape plot`` (``measures``, ``split``, ``since``, ...)."""
    spec = figure_spec(kind)
    return spec.draw(load(args, spec.table, best_last=spec.best_last), **options)


def save(fig, args: argparse.Namespace, name: str) -> list[Path]:
    paths = save_figure(fig, Path(args.out) / name, formats=args.formats, dpi=args.dpi)
    for p in paths:
        print(p)
    return paths
