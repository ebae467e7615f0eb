"""The closing summary every long command prints: what it wrote, where, how many rows, what failed.

Same shape for every command::

    landscape slice: wrote 2 file(s) to runs/my_run
      runs/my_run/slices_1d.parquet  (1,632 rows)
      runs/my_run/slices_1d.png
    landscape slice: 16 samples, 51 points per axis, radius 0.1

A command calls :func:`print_summary` once (``outputs`` are paths, or ``(path, rows)`` pairs); failures are
listed after the files, one line each.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Sequence, TextIO

def _common_folder(paths: Sequence[Path]) -> Path | None:
    try:
        return Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else None
    except ValueError:  # different drives
        return None


def summary_lines(command: str, outputs: Iterable, *, details: Iterable[str] = (),
                  failures: Iterable[str] = ()) -> list[str]:
    """The summary as lines (see the module docstring); ``details`` are one-line facts appended after the
    files, ``failures`` one line each, counted in the last line."""
    items = [(Path(o[0]), o[1]) if isinstance(o, tuple) else (Path(o), None) for o in outputs]
    failures = list(failures)
    folder = _common_folder([p for p, _ in items])
    where = f" to {folder}" if folder is not None and str(folder) not in ("", ".") else ""
    lines = [f"landscape {command}: wrote {len(items)} file(s){where}"]
    for path, rows in items:
        lines.append(f"  {path}" + (f"  ({rows:,} rows)" if rows is not None else ""))
    lines += [f"landscape {command}: {d}" for d in details]
    if failures:
        lines.append(f"landscape {command}: {len(failures)} failure(s):")
        lines += [f"  {f}" for f in failures]
    return lines


def print_summary(command: str, outputs: Iterable, *, details: Iterable[str] = (), failures: Iterable[str] = (),
                  stream: TextIO | None = None) -> None:
    """Print :func:`summary_lines` to ``stream`` (default stdout)."""
    print("\n".join(summary_lines(command, outputs, details=details, failures=failures)),
          file=stream or sys.stdout)
