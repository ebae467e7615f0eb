"""`landscape plot KIND TABLE... --out DIR`: draw one registered figure kind from tables or run directories."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import output_dir, positive_int
from ._names import FIGURES
from ._summary import print_summary


def _kinds() -> list[str]:
    """The figure kinds of ``landscape.plotting.FIGURES`` (without importing matplotlib)."""
    return list(FIGURES)


HELP = "draw a diagnostic figure (any kind of landscape.plotting.FIGURES) as PNG+PDF"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=_kinds(), metavar="KIND", help=f"figure kind: {', '.join(_kinds())}")
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
    g.add_argument("--log", action="store_true", help="distributions: logarithmic measure axis "
                                                      "(default: log only for heavy-tailed positive values)")


def _diagnoses(args) -> dict:
    """Each run's diagnosis as the report and `landscape diagnose` make it (with the run's metrics.csv)."""
    from landscape._base import LandscapeError
    from landscape.diagnose import run_diagnoses  # lazy: start-up (pandas)

    try:
        return run_diagnoses([Path(t) if Path(t).is_dir() else Path(t).parent for t in args.tables])
    except (FileNotFoundError, LandscapeError, ValueError):  # nothing to diagnose: --best-last says so
        return {}


def _best_last_of(diagnoses: dict) -> dict:
    return {run: {"best": d.best_epoch, "last": d.last_epoch} for run, d in diagnoses.items()
            if d.best_epoch is not None}


def _best_last(args, table, diagnoses):
    from landscape.plotting import label_epochs  # lazy: start-up (matplotlib)

    epochs = _best_last_of(diagnoses)
    if not epochs:
        raise ValueError("--best-last: no run could be diagnosed (no best epoch in trajectory.parquet)")
    if len(args.tables) == 1:
        return label_epochs(table, next(iter(epochs.values())))
    return label_epochs(table, epochs)


def _since(table, diagnoses):
    """Each run's best epoch (for --from-best), or the one run's best epoch when the table has no runs."""
    since = {run: e["best"] for run, e in _best_last_of(diagnoses).items()}
    return since if "run" in table.columns else next(iter(since.values()), None)


def _sample(text):
    if text is None or text == "mean":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--sample must be an integer sample id or 'mean', got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from landscape.plotting import figure_spec, save_figure  # lazy: start-up (matplotlib)
    from landscape.runs import load_tables  # lazy: start-up (pandas)

    spec = figure_spec(args.kind)
    table = load_tables(args.tables, spec.table)
    if args.epochs:
        if "epoch" not in table.columns:
            raise ValueError(f"--epochs: the {spec.table} table has no 'epoch' column")
        table = table[table["epoch"].isin(args.epochs)]
        if table.empty:
            raise ValueError(f"--epochs: none of {args.epochs} are in the table")
    wants = args.best_last or args.from_best or spec.takes("diagnoses")
    diagnoses = _diagnoses(args) if wants else {}
    if args.best_last:
        table = _best_last(args, table, diagnoses)
    options = dict(measures=args.measure, by=args.by, split=args.split, sample=_sample(args.sample),
                   surface=args.surface_kind, violin=args.violin, log=True if args.log else None, title=args.title,
                   since=_since(table, diagnoses) if args.from_best else None,
                   diagnoses={run: d.to_dict() for run, d in diagnoses.items()} or None)
    fig = spec.draw(table, **options)
    out = output_dir(args.out)
    paths = save_figure(fig, out / (args.name or spec.stem or spec.name), formats=args.formats, dpi=args.dpi)
    print_summary("plot", paths, details=[f"{spec.name} from {len(table):,} rows of {len(args.tables)} table(s)"])
    return 0
