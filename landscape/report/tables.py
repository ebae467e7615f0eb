"""Report tables as (header, rows) of formatted strings: one format for the HTML and the Markdown page."""
from __future__ import annotations

import math
import numbers
import platform
import sys
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from ..plotting.methods import method_of
from ..ranking import rank_measures

Table = tuple[list[str], list[list[str]]]


def findings_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of a findings table.

    Each pair of columns ``<x>_mean`` and ``<x>_std`` (or ``_sd``) becomes one column ``<x>`` of
    "mean ± sd" cells. Numbers get one number of decimals per column, enough for three significant digits
    of its smallest non-zero value (at most 4; none for whole numbers); missing values are "—"; other
    columns are shown as they are.
    """
    if table.empty:
        raise ValueError("findings.csv has no rows")
    cols = [str(c) for c in table.columns]
    table = table.set_axis(cols, axis=1)
    header, cells = [], []
    done: set[str] = set()
    for c in cols:
        if c in done:
            continue
        stem = c[: -len("_mean")] if c.endswith("_mean") else None
        sd = next((stem + s for s in ("_std", "_sd") if stem and stem + s in cols), None)
        if sd is not None:
            done.update((c, sd))
            header.append(stem)
            d = _decimals(table[c])
            cells.append([_mean_sd(m, v, d) for m, v in zip(table[c], table[sd])])
        else:
            done.add(c)
            header.append(c)
            d = _decimals(table[c])
            cells.append([_number(v, d) for v in table[c]])
    return header, [list(row) for row in zip(*cells)]


def _decimals(column: pd.Series) -> int | None:
    """Decimals for a column: three significant digits of its smallest non-zero |value| (0..4); 0 for whole
    numbers; None when it is not numeric."""
    values = pd.to_numeric(column, errors="coerce")
    if column.dtype == bool or values.notna().sum() < column.notna().sum():
        return None
    values = values[values.notna() & (values != 0) & values.abs().lt(float("inf"))].abs()
    if values.empty or (values % 1 == 0).all():
        return 0
    return int(min(4, max(0, 2 - math.floor(math.log10(values.min())))))


def _number(value, decimals: int | None) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    if decimals is None or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        return str(value)
    return f"{float(value):.{decimals}f}"


def _mean_sd(mean, sd, decimals: int | None) -> str:
    if decimals is None:
        return f"{mean} ± {sd}"
    mean, sd = float(mean), float(sd)
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.{decimals}f}" + (f" ± {sd:.{decimals}f}" if math.isfinite(sd) else "")


#: Diagnosis columns of the summary table: (key, header, formatter).
_DIAG_COLUMNS = [
    ("best_epoch", "best epoch", "int"),
    ("best_acc_adv", "best robust acc (%)", "pct"),
    ("last_epoch", "last epoch", "int"),
    ("last_acc_adv", "last robust acc (%)", "pct"),
    ("gap", "RO gap (pp)", "pp"),
    ("onset_epoch", "RO onset epoch", "int"),
    ("train_test_gap_last", "train − test robust acc, last (pp)", "pp"),
]


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if kind == "int":
        return str(int(value))
    if kind == "pct":
        return f"{100 * float(value):.1f}"
    if kind == "pp":
        return f"{float(value):.1f}"
    return f"{float(value):+.2f}"


def diagnosis_rows(diagnoses: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of the per-run diagnosis table."""
    header = ["run", *[h for _, h, _ in _DIAG_COLUMNS]]
    rows = []
    for run, d in diagnoses.items():
        if "error" in d:
            rows.append([run, *["—"] * len(_DIAG_COLUMNS)])
        else:
            rows.append([run, *[_fmt(d.get(k), kind) for k, _, kind in _DIAG_COLUMNS]])
    return header, rows


def correlation_rows(diagnoses: dict[str, dict[str, Any]], stat: str = "spearman"
                     ) -> tuple[list[str], list[list[str]]]:
    """Compact correlation table: one row per (run, split), one column per measure (``stat`` values)."""
    measures: list[str] = []
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for run, d in diagnoses.items():
        for rec in d.get("correlations") or []:
            m, split = str(rec.get("measure")), str(rec.get("split"))
            if m not in measures:
                measures.append(m)
            cells.setdefault((run, split), {})[m] = f"{_fmt(rec.get(stat), 'corr')} (n={rec.get('n', '—')})"
    header = ["run", "split", *measures]
    rows = [[run, split, *[c.get(m, "—") for m in measures]] for (run, split), c in cells.items()]
    return header, rows


def ranking_rows(diagnoses: dict[str, dict[str, Any]]) -> Table:
    """Every measure ranked by how well it tracks robust overfitting across the runs that overfit
    (:func:`landscape.ranking.rank_measures`): ρ as "mean ± sd" over runs, its range and sign agreement."""
    table = rank_measures(diagnoses)
    header = ["rank", "measure", "landscape", "split", "runs", "Spearman ρ (mean ± sd)", "range", "same sign"]
    rows = [[str(r["rank"]), str(r["measure"]), str(r["space"]), str(r["split"]), str(r["runs"]),
             _mean_sd(r["spearman_mean"], r["spearman_sd"], 2),
             f"{r['spearman_min']:+.2f} … {r['spearman_max']:+.2f}",
             "—" if pd.isna(r["same_sign"]) else f"{100 * r['same_sign']:.0f}%"] for _, r in table.iterrows()]
    return header, rows


def versions() -> dict[str, str]:
    """Versions of landscape and its main dependencies, Python and the platform (no imports of torch)."""
    out = {"landscape": __version__}  # the running code's (an editable install's metadata can lag behind it)
    for pkg in ("torch", "numpy", "pandas", "matplotlib", "seaborn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["python"] = sys.version.split()[0]
    out["platform"] = platform.platform()
    return out



def claims_rows(table: pd.DataFrame) -> Table:
    """The claims table (``claim``, ``evidence``, ``value``, ``holds`` and any other columns) formatted;
    ``holds`` as "yes"/"no" (missing: "—")."""
    table = table.copy()
    if "holds" in table.columns:
        table["holds"] = [_yes_no(v) for v in table["holds"]]
    return findings_rows(table)


def _yes_no(value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "1.0"):
        return "yes"
    if text in ("false", "0", "no", "0.0"):
        return "no"
    return str(value)


#: Per-method best/last columns: (diagnosis key, header, scale).
_METHOD_COLUMNS = [("best_epoch", "best epoch", 1), ("best_acc_adv", "best robust acc (%)", 100),
                   ("last_epoch", "last epoch", 1), ("last_acc_adv", "last robust acc (%)", 100),
                   ("gap", "RO gap (pp)", 1)]


def method_table(diagnoses: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per method (runs ``<method>/<seed>``): the number of diagnosed runs and ``<x>_mean``/``<x>_std`` over
    them of the best/last epoch, best/last robust test accuracy (%) and the RO gap (points)."""
    groups: dict[str, list[dict]] = {}
    for run, d in diagnoses.items():
        ok = "error" not in d and d.get("best_epoch") is not None
        groups.setdefault(method_of(run), []).extend([d] if ok else [])
    rows = []
    for method, ds in groups.items():
        rec: dict[str, Any] = {"method": method, "runs": len(ds)}
        for key, _, k in _METHOD_COLUMNS:
            v = np.array([float(d[key]) * k for d in ds if d.get(key) is not None], dtype=float)
            rec[f"{key}_mean"] = float(v.mean()) if len(v) else float("nan")
            rec[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        rows.append(rec)
    return pd.DataFrame(rows)


def method_rows(diagnoses: dict[str, dict[str, Any]]) -> Table:
    """Header and rows of the best/last table per method: "mean ± sd" over seeds (sd left out for one run)."""
    table = method_table(diagnoses)
    header = ["method", "runs", *[h for _, h, _ in _METHOD_COLUMNS]]
    rows = []
    for _, r in table.iterrows():
        cells = [str(r["method"]), str(int(r["runs"]))]
        for key, _, _ in _METHOD_COLUMNS:
            decimals = 0 if key.endswith("epoch") else 1
            cells.append(_mean_sd(r[f"{key}_mean"], r[f"{key}_std"], decimals))
        rows.append(cells)
    return header, rows


#: Columns of final_eval.csv that say which checkpoint a row evaluates, in order of preference.
_CHECKPOINT_COLUMNS = ("which", "label", "checkpoint")


def final_eval_rows(table: pd.DataFrame) -> Table:
    """The final evaluation (``final_eval.csv``: per run, rows ``which`` = best/last with ``epoch``,
    ``acc_clean``, ``acc_pgd``, ``acc_autoattack``, ...) per method and checkpoint: numeric columns as "mean ± sd" over the method's runs;
    accuracies stored as fractions are shown in %."""
    data = table.copy()
    data["method"] = [method_of(r) for r in data["run"]] if "run" in data.columns else "all"
    key = next((c for c in _CHECKPOINT_COLUMNS if c in data.columns), None)
    keys = ["method"] + ([key] if key else [])
    numeric = [c for c in data.columns if c not in (*keys, "run") and pd.api.types.is_numeric_dtype(data[c])
               and data[c].dtype != bool]
    for c in numeric:
        if c.startswith("acc") and data[c].abs().max() <= 1.0:
            data[c] = 100 * data[c]
    g = data.groupby(keys, sort=False)
    out = g[numeric].mean().add_suffix("_mean").join(g[numeric].std(ddof=1).add_suffix("_std"))
    out.insert(0, "runs", g.size())
    out = out.reset_index()
    ordered = [*keys, "runs"] + [f"{c}_{s}" for c in numeric for s in ("mean", "std")]
    header, rows = findings_rows(out[ordered])
    return [h.replace("acc_", "acc ") + (" (%)" if h.startswith("acc_") else "") for h in header], rows
