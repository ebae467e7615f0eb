"""The paper's abstract claims, tested on a study's per-run summary with a noise-aware rule.

Li & Spratling (2023) claim that robust overfitting (RO)
1. results from standard training, specifically from minimising the clean loss;
2. is mitigated by regularising the input-loss gradients, in standard training as in AT;
3. turns severer during AT partly because AT's gradient-regularisation effect weakens as the curvature of
   the input loss landscape grows;
4. is mitigated by AdvLC, with the best robustness among similar regularisers.

One cross-paper statement ("x.") puts the weight landscape beside them: Stutz et al. (2021) and Wu et al.
(2020, AWP) found the weight landscape of the robust loss turning sharper as RO sets in.

:func:`claims_table` turns the per-run summary of a study (one row per variant and seed, see
:func:`landscape.study.findings.run_summary`) into one row per testable statement: ``claim, evidence, value,
holds``; :func:`claims_markdown` renders such a table.

**Rule.** Every statement is an effect ``d`` whose sign the claim predicts (a gap > 0, a difference of gaps
> 0, a correlation < 0). With ``n`` seeds per variant, ``se`` is the standard error from the seed spread
(``sd/√n``; for a difference between two variants ``√(se_a² + se_b²)``). ``holds`` is ``yes`` when ``d``
exceeds ``2·se`` in the predicted direction, ``no`` when it exceeds ``2·se`` in the other direction, and
``inconclusive`` otherwise (or with fewer than 2 seeds, where no spread exists).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._format import pm

__all__ = ["CLAIM_COLUMNS", "K_SE", "verdict", "mean_se", "effect", "claims_table", "claims_markdown"]

CLAIM_COLUMNS = ["claim", "evidence", "value", "holds"]
#: the effect must exceed this many standard errors.
K_SE = 2.0


def verdict(value: float, se: float, *, sign: int = 1, n: int = 2) -> str:
    """``yes``/``no``/``inconclusive`` for an effect ``value`` ± ``se`` predicted to have ``sign`` (±1)."""
    if n < 2 or not (math.isfinite(value) and math.isfinite(se)):
        return "inconclusive"
    d = sign * value
    if d > K_SE * se:
        return "yes"
    if d < -K_SE * se:
        return "no"
    return "inconclusive"


def mean_se(values: pd.Series) -> tuple[float, float, int]:
    """``(mean, sd/√n, n)`` of the non-NaN ``values`` (se NaN for fewer than 2; mean NaN too for none)."""
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    sd = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
    return float(v.mean()), sd / math.sqrt(len(v)) if len(v) > 1 else math.nan, len(v)


def effect(runs: pd.DataFrame, column: str, a: str, b: str | None = None) -> tuple[float, float, int]:
    """``(mean, se, n)`` of ``column`` for variant ``a``, or of the difference ``a − b`` of the variants'
    means (``se`` combined, ``n`` the smaller seed count)."""
    ma, sa, na = mean_se(runs.loc[runs["variant"] == a, column]) if column in runs else (math.nan, math.nan, 0)
    if b is None:
        return ma, sa, na
    mb, sb, nb = mean_se(runs.loc[runs["variant"] == b, column]) if column in runs else (math.nan, math.nan, 0)
    return ma - mb, math.sqrt(sa ** 2 + sb ** 2), min(na, nb)


# (claim, column, variant a, variant b or None, predicted sign, evidence template)
_STATEMENTS = [
    ("1. RO occurs under PGD-AT", "gap", "pgd_at", None, 1,
     "best − last test PGD accuracy of pgd_at (points)"),
    ("1. RO comes from the clean-loss term: AT with its clean term halved overfits less", "gap", "pgd_at",
     "at_clean_half", 1, "RO gap of pgd_at − at_clean_half (½·L(x) + [L(x_adv) − L(x)]; points)"),
    ("1. Standard training robust-overfits at a small eps", "gap_small", "standard", None, 1,
     "best − last test PGD accuracy of standard training at the small eps (points)"),
    ("2. Gradient regularisation mitigates RO in standard training", "gap_small", "standard",
     "standard_gradreg", 1, "RO gap at the small eps of standard − standard_gradreg (points)"),
    ("2. Gradient regularisation mitigates RO in AT", "gap", "pgd_at", "at_gradreg", 1,
     "RO gap of pgd_at − at_gradreg (points)"),
    ("3. After the best epoch, AT's first-order share of the adversarial loss increase falls as curvature "
     "grows", "rho_curv_share", "pgd_at", None, -1,
     "Spearman ρ over analysed epochs ≥ best epoch between test curv_adv and the first-order share "
     "eps·‖∇ₓL‖₁ / (L(x_adv) − L(x)), pgd_at, mean over seeds"),
    ("x. Cross-paper (Stutz et al. 2021; Wu et al. 2020, AWP): the weight landscape of the robust loss turns "
     "sharper during RO", "w_flat_avg_rise", "pgd_at", None, 1,
     "average-case robust flatness w_flat_avg (robust-loss rise under random relative weight noise) at the last − "
     "the best epoch, pgd_at"),
    ("x. Cross-paper (Wu et al. 2020, AWP): the robust loss rises more under the adversarial weight perturbation "
     "during RO", "w_awp_gap_rise", "pgd_at", None, 1,
     "AWP robust-loss increase w_awp_gap (one relative weight step γ = 5e-3 along the robust-loss gradient) at the "
     "last − the best epoch, pgd_at"),
    ("4. AdvLC mitigates RO", "gap", "pgd_at", "at_advlc", 1, "RO gap of pgd_at − at_advlc (points)"),
    ("4. AdvLC gives the best robustness among the regularisers", "last", "at_advlc", "at_gradreg", 1,
     "last-epoch test PGD accuracy of at_advlc − at_gradreg (points)"),
]


def claims_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per statement of the abstract: ``claim, evidence, value, holds``.

    Args:
        runs: per-run summary, one row per (variant, seed) with columns ``variant``, ``seed`` and the
            effect columns ``gap``, ``gap_small``, ``last``, ``rho_curv_share`` (missing ones give
            ``inconclusive`` rows, as do variants the study did not train).

    Returns:
        DataFrame with :data:`CLAIM_COLUMNS`; ``value`` the effect (mean over seeds or difference of means),
        ``evidence`` says what was compared, with ± the standard error and the seed count.
    """
    rows = []
    for claim, column, a, b, sign, text in _STATEMENTS:
        value, se, n = effect(runs, column, a, b)
        digits = 3 if column.startswith("w_") else 2 if column.startswith("rho") else 1
        shown = pm(value, se, digits, missing="n/a", label="se")
        detail = f"{text}: {shown}, {n} seed(s)"
        if n == 0:
            detail = f"{text}: not measured (variant(s) {a}{', ' + b if b else ''} not in this study)"
        holds = verdict(value, se, sign=sign, n=n)
        rows.append(dict(claim=claim, evidence=detail, value=round(value, 6) + 0.0, holds=holds))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def claims_markdown(claims: pd.DataFrame) -> str:
    """Markdown table of a claims table (``claim | evidence | value | holds``)."""
    lines = ["| claim | evidence | value | holds |", "|---|---|---|---|"]
    for r in claims.to_dict("records"):
        lines.append(f"| {r['claim']} | {r['evidence']} | {pm(r['value'], digits=2)} | **{r['holds']}** |")
    return "\n".join(lines) + "\n"
