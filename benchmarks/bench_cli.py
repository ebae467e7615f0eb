"""Start-up time of the command line: ``landscape --help`` and ``landscape CMD --help`` against ``python -c pass``.

Each case runs in a fresh interpreter ``--runs`` times, the cases interleaved (round-robin) so that load from
other processes hits every case alike; the median wall time of each, minus the median of ``python -c pass``
(the interpreter's own start-up, measured in the same rounds), is what the command line adds. One extra run per
case with ``-X importtime`` names the heavy packages (torch, matplotlib, pandas, scipy, ...) it imported.

The goal (issue 27): under 0.5 s over ``python -c pass`` for every case, with no heavy package imported.
``--out`` writes the table as CSV; ``--from-csv A.csv B.csv --doc docs/internals.md`` writes the start-up block
of the docs from CSVs (no measurement then; ``--label`` tells runs apart, e.g. before/after a change).
``--source DIR`` runs the command line of another source tree (``git archive OLD landscape | tar -x -C DIR``)
through ``python -m landscape.cli``, to time an older commit on the same machine under the same load.

    python benchmarks/bench_cli.py --runs 10 --out benchmarks/results/cli_cpu.csv
    python benchmarks/bench_cli.py --source /tmp/old --label "before" --out /tmp/cli_before.csv
    python benchmarks/bench_cli.py --from-csv benchmarks/results/cli_cpu.csv --doc docs/internals.md
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# benchmarks/ is on sys.path when this runs as a script
from bench_measures import commit
from bench_units import add_doc_options, doc_from_csvs

COMMANDS = ("measure", "slice", "trajectory", "diagnose", "evaluate", "plot", "report", "train", "demo")
HEAVY = ("torch", "matplotlib", "pandas", "scipy", "seaborn", "numpy", "pyarrow", "plotly", "ray")
GOAL_S = 0.5
BASELINE = "python -c pass"
DOC_BEGIN, DOC_END = "<!-- cli-startup:begin (benchmarks/bench_cli.py --doc) -->", "<!-- cli-startup:end -->"


def launcher(via: str) -> list[str]:
    """How to start the command line: the installed ``landscape`` script beside this interpreter, or
    ``python -m landscape.cli``."""
    script = Path(sys.executable).parent / "landscape"
    if via == "script" or (via == "auto" and script.is_file()):
        if not script.is_file():
            found = shutil.which("landscape")
            if found is None:
                raise SystemExit("no `landscape` script beside this interpreter or on PATH; use --via module")
            script = Path(found)
        return [str(script)]
    return [sys.executable, "-m", "landscape.cli"]


def cases(via: str, commands: list[str]) -> dict[str, list[str]]:
    """Case name -> argv; the baseline first."""
    run = launcher(via)
    out = {BASELINE: [sys.executable, "-c", "pass"], "landscape --help": [*run, "--help"]}
    out.update({f"landscape {c} --help": [*run, c, "--help"] for c in commands})
    return out


ENV = dict(os.environ)  # of the timed processes (PYTHONPATH with --source)
CWD: str | None = None  # their working folder (with --source: that tree, which `python -m` puts first)


def _once(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=CWD)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return seconds


def heavy_imports(argv: list[str]) -> list[str]:
    """The packages of ``HEAVY`` that the command imports (read from ``-X importtime``)."""
    if argv[1:2] == ["-c"]:
        return []
    env = dict(ENV, PYTHONPROFILEIMPORTTIME="1")  # works through the script's shebang too
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=CWD)
    top = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
           if line.startswith("import time:")}
    return [name for name in HEAVY if name in top]


def measure(argvs: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    for argv in argvs.values():  # warm-up: file-system cache, .pyc files
        _once(argv)
    times: dict[str, list[float]] = {name: [] for name in argvs}
    for _ in range(runs):
        for name, argv in argvs.items():
            times[name].append(_once(argv))
    return times


def markdown(rows: list[dict] | object) -> str:
    """The start-up block of docs/internals.md: one column per label (run), seconds over ``python -c pass``."""
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    df = df.assign(heavy=df["heavy"].fillna("").astype(str))
    labels = list(dict.fromkeys(df["label"]))
    head = "| command | " + " | ".join(f"{lab}: s over `python -c pass`" for lab in labels) + " |"
    lines = [head, "|---|" + "---|" * len(labels)]
    for case in dict.fromkeys(df.loc[df["case"] != BASELINE, "case"]):
        cells = []
        for lab in labels:
            row = df[(df["label"] == lab) & (df["case"] == case)]
            if not len(row):
                cells.append("")
                continue
            r = row.iloc[0]
            cells.append(f"{r.over_baseline_s:.2f}" + (f" ({r.heavy.replace(',', ', ')})" if r.heavy else ""))
        lines.append(f"| `{case}` | " + " | ".join(cells) + " |")
    notes = []
    for lab in labels:
        g = df[df["label"] == lab]
        r0 = g.iloc[0]
        worst = g.loc[g["case"] != BASELINE, "over_baseline_s"].max()
        source = r0.get("source")
        code = f"code {r0['commit']}" if not isinstance(source, str) or not source else "an exported tree"
        notes.append(f"{lab}: median of {int(r0.runs)} interleaved runs on {r0.machine}, Python {r0.python}, "
                     f"`python -c pass` {r0.baseline_s:.3f} s, {code}; slowest case {worst:.2f} s "
                     f"over the baseline ({'within' if worst <= GOAL_S else 'over'} the {GOAL_S} s goal)")
    return ("\n".join(lines) + "\n\nIn brackets: the heavy packages the command imported.\n\n"
            + "".join(f"- {n}.\n" for n in notes))


def main(argv: list[str] | None = None) -> int:
    global CWD
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="timed runs of each case (default 7); the median is kept")
    p.add_argument("--commands", default=",".join(COMMANDS), help="subcommands whose --help to time")
    p.add_argument("--via", choices=["auto", "script", "module"], default="auto",
                   help="the installed `landscape` script (auto: when there is one) or python -m landscape.cli")
    p.add_argument("--source", default=None, metavar="DIR",
                   help="time the landscape package in DIR (put first on PYTHONPATH; implies --via module)")
    p.add_argument("--label", default=None, help="name of this run in the table (default: the git commit)")
    p.add_argument("--out", default=None, help="write the table as CSV here")
    add_doc_options(p, "cli-startup")
    args = p.parse_args(argv)
    if args.from_csv:
        return doc_from_csvs(args.from_csv, markdown, args.doc, DOC_BEGIN, DOC_END)

    if args.source:
        if not (Path(args.source) / "landscape" / "cli.py").is_file():
            raise SystemExit(f"--source {args.source}: no landscape/cli.py there")
        ENV["PYTHONPATH"] = os.pathsep.join([str(Path(args.source).resolve()), *filter(None, [ENV.get("PYTHONPATH")])])
        args.via = "module"
        CWD = str(Path(args.source).resolve())
    argvs = cases(args.via, [c for c in args.commands.split(",") if c])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{len(argvs)} cases x {args.runs} runs (interleaved), via {' '.join(argvs['landscape --help'][:-1])}; "
          f"{os.cpu_count()} cores, load average {load:.2f}")
    times = measure(argvs, args.runs)
    base = statistics.median(times[BASELINE])
    code = "" if args.source else commit()  # --source: say which tree in --label
    machine = f"{os.cpu_count()}-core {platform.machine()} {platform.system()}, load {load:.1f}"
    rows = []
    print(f"{'case':<30} {'median s':>9} {'over base':>10}  heavy imports")
    for name, ts in times.items():
        med = statistics.median(ts)
        heavy = heavy_imports(argvs[name])
        rows.append({"case": name, "median_s": med, "baseline_s": base, "over_baseline_s": med - base,
                     "min_s": min(ts), "max_s": max(ts), "runs": args.runs, "heavy": ",".join(heavy),
                     "label": args.label or code or "this run", "machine": machine, "source": args.source or "",
                     "python": platform.python_version(), "commit": code})
        print(f"{name:<30} {med:9.3f} {med - base:10.3f}  {', '.join(heavy) or '-'}")
    worst = max(r["over_baseline_s"] for r in rows if r["case"] != BASELINE)
    print(f"slowest: {worst:.3f} s over `{BASELINE}` ({'within' if worst <= GOAL_S else 'OVER'} the {GOAL_S} s goal)")
    if args.out:
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.out}")
    if args.doc:
        from bench_units import write_doc

        block = markdown(rows)
        write_doc(Path(args.doc), block, DOC_BEGIN, DOC_END)
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
