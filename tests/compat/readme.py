"""The README's command tables, read for the tests that run every row."""
from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def table_rows(heading: str) -> dict[str, str]:
    """``{first cell: command}`` of the three-column table under ``## heading`` (commands in backticks)."""
    section = README.read_text().split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("`landscape "):
            rows[cells[0]] = cells[2].strip("`")
    return rows
