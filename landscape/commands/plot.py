"""`landscape plot KIND TABLE... --out DIR`: draw one figure kind from tables or run directories."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import output_dir, positive_int

HELP = "draw a diagnostic figure (curves, measures, slices1d, surface, distributions, scatter) as PNG+PDF"

#: figure kind -> (run file a directory stands for, default output name)
KINDS = {
    "curves": ("trajectory", "learning_curves"),
    "measures": ("trajectory", "measures"),
    "slices1d": ("slices_1d", "slices_1d"),
    "surface": ("slices_2d", "surface"),
    "distributions": ("samples", "distributions"),
    "scatter": ("trajectory", "measure_vs_loss"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=list(KINDS), help="figure kind")
    p.add_argument("tables", nargs="+", metavar="TABLE",
                   help="table files (.parquet/.csv) or run directories; several are overlaid as runs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default=None, help="file name without extension (default: per kind)")
    p.add_argument("--format", dest="formats", nargs="+", default=["png", "pdf"],
                   choices=["png", "pdf", "svg"], help="output formats (default: png pdf)")
    p.add_argument("--dpi", type=positive_int, default=160, help="raster resolution (default 160)")
    p.add_argument("--title", default=None, help="figure title")
    g = p.add_argument_group("what to draw")
    g.add_argument("--measure", action="append", default=None, metavar="NAME",
                   help="measure column(s): measures/distributions (repeatable); scatter uses the first "
                        "(default curv_adv)")
    g.add_argument("--by", default=None, help="grouping column overlaid in colour (slices1d/surface/"
                                              "distributions; default: label, else epoch)")
    g.add_argument("--epochs", type=int, nargs="+", default=None, help="keep only these epochs")
    g.add_argument("--best-last", action="store_true",
                   help="keep each run's best and last epoch, labelled (reads trajectory.parquet next to "
                        "each table)")
    g.add_argument("--from-best", action="store_true",
                   help="scatter: Spearman rho over the epochs from each run's best one on (earlier faded)")
    g.add_argument("--split", default="test", choices=["test", "train"],
                   help="split for distributions/scatter (default test)")
    g.add_argument("--sample", default=None, help="surface: sample id or 'mean' (default: first sample)")
    g.add_argument("--surface", dest="surface_kind", default="both", choices=["both", "contour", "3d"],
                   help="surface: contour, 3D or both")
    g.add_argument("--violin", action="store_true", help="distributions: violins instead of histograms")
    g.add_argument("--log", action="store_true", help="distributions: logarithmic measure axis")


def _best_last(args, table):
    from landscape.plotting import label_epochs
    from landscape.runs import best_last_epochs, load_tables

    folders = [Path(t) if Path(t).is_dir() else Path(t).parent for t in args.tables]
    epochs = best_last_epochs(load_tables(folders, "trajectory"))
    if not epochs:
        raise ValueError("--best-last: no run could be diagnosed (no best epoch in trajectory.parquet)")
    if len(args.tables) == 1:
        return label_epochs(table, next(iter(epochs.values())))
    return label_epochs(table, epochs)


def run(args: argparse.Namespace) -> int:
    from landscape import plotting as P
    from landscape.runs import load_tables

    key, default_name = KINDS[args.kind]
    table = load_tables(args.tables, key)
    if args.epochs:
        if "epoch" not in table.columns:
            raise ValueError(f"--epochs: the {key} table has no 'epoch' column")
        table = table[table["epoch"].isin(args.epochs)]
        if table.empty:
            raise ValueError(f"--epochs: none of {args.epochs} are in the table")
    if args.best_last:
        table = _best_last(args, table)
    sample = args.sample
    if sample is not None and sample != "mean":
        try:
            sample = int(sample)
        except ValueError:
            raise ValueError(f"--sample must be an integer sample id or 'mean', got {sample!r}") from None
    measures = args.measure
    if args.kind == "curves":
        fig = P.plot_learning_curves(table, title=args.title)
    elif args.kind == "measures":
        fig = P.plot_measures(table, measures, title=args.title)
    elif args.kind == "slices1d":
        fig = P.plot_slices_1d(table, by=args.by, title=args.title)
    elif args.kind == "surface":
        fig = P.plot_surface(table, sample=sample, by=args.by, kind=args.surface_kind, title=args.title)
    elif args.kind == "distributions":
        fig = P.plot_distributions(table, measures or ["grad_l1", "curv_adv"], by=args.by, split=args.split,
                                   kind="violin" if args.violin else "hist", log=args.log, title=args.title)
    else:
        since = None
        if args.from_best:
            from landscape.runs import best_last_epochs

            epochs = best_last_epochs(table)
            since = {run: e["best"] for run, e in epochs.items()}
            if "run" not in table.columns:
                since = next(iter(since.values()), None)
        ax = P.plot_measure_vs_loss(table, (measures or ["curv_adv"])[0], measure_split=args.split,
                                    loss_split=args.split, since=since)
        if args.title:
            ax.set_title(args.title)
        fig = ax.figure
    out = output_dir(args.out)
    for path in P.save_figure(fig, out / (args.name or default_name), formats=args.formats, dpi=args.dpi):
        print(path)
    return 0
