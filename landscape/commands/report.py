"""`landscape report RUN_DIR`: self-contained HTML (and Markdown) report of one run or a folder of runs."""
from __future__ import annotations

import argparse

from ._common import positive_int
from ._summary import print_summary

HELP = "write report.html (self-contained, offline) and report.md: the comparison first, then every figure"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a run folder (trajectory.parquet, possibly in analysis/) or a folder of runs")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/report)")
    p.add_argument("--dpi", type=positive_int, default=150, help="figure resolution (default 150)")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--static", action="store_true", help="PNG figures only (no interactive charts, no plotly.js)")


def run(args: argparse.Namespace) -> int:
    from landscape.report import build_report  # lazy: start-up (matplotlib, pandas)

    html = build_report(args.run_dir, args.out, dpi=args.dpi, progress=not args.quiet, title=args.title,
                        interactive=not args.static)
    figures = sorted((html.parent / "figures").glob("*.png"))
    print_summary("report", [html, html.with_name("report.md")],
                  details=[f"{len(figures)} figure(s) in {html.parent / 'figures'}"])
    return 0
