"""The claims rule on hand-made per-run summaries; their Markdown and the study's ± formatter."""
import math

import numpy as np
import pandas as pd
import pytest

from landscape.study._format import pm
from landscape.study.claims import CLAIM_COLUMNS, claims_markdown, claims_table, effect, verdict


def test_verdict_two_standard_errors_in_the_predicted_direction():
    assert verdict(5.0, 2.0) == "yes"            # 5 > 2·2
    assert verdict(3.9, 2.0) == "inconclusive"   # within 2 se
    assert verdict(-4.1, 2.0) == "no"            # beyond 2 se the other way
    assert verdict(-0.5, 0.1, sign=-1) == "yes"  # a predicted negative correlation
    assert verdict(5.0, math.nan, n=1) == "inconclusive"
    assert verdict(math.nan, 1.0) == "inconclusive"


def _runs(**gaps):
    rows = []
    for variant, values in gaps.items():
        for seed, v in enumerate(values):
            rows.append(dict(variant=variant, seed=seed, gap=v))
    return pd.DataFrame(rows)


def test_effect_of_a_difference_combines_standard_errors():
    runs = _runs(pgd_at=[8.0, 9.0, 10.0], at_advlc=[2.0, 2.0, 5.0])
    value, se, n = effect(runs, "gap", "pgd_at", "at_advlc")
    sa = np.std([8, 9, 10], ddof=1) / math.sqrt(3)
    sb = np.std([2, 2, 5], ddof=1) / math.sqrt(3)
    assert value == pytest.approx(9.0 - 3.0) and n == 3
    assert se == pytest.approx(math.sqrt(sa ** 2 + sb ** 2))


def test_claims_table_rows_values_and_verdicts():
    runs = _runs(pgd_at=[8.0, 9.0, 10.0], at_advlc=[2.0, 2.0, 2.5], at_gradreg=[9.0, 12.0, 6.0],
                 at_clean_half=[1.0, 1.5, 0.5])
    runs["last"] = runs["gap"] * -1 + 80
    small = pd.DataFrame(dict(variant=["standard"] * 3 + ["standard_gradreg"] * 3, seed=[0, 1, 2] * 2,
                              gap_small=[20.0, 22.0, 24.0, 1.0, 2.0, 0.0]))
    rho = pd.DataFrame(dict(variant="pgd_at", seed=[0, 1, 2], rho_curv_share=[-0.8, -0.9, -0.7]))
    table = claims_table(pd.concat([runs, small, rho]))
    assert list(table.columns) == CLAIM_COLUMNS and len(table) == 10

    def row(start):
        (match,) = [r for r in table.to_dict("records") if r["claim"].startswith(start)]
        return pytest.approx(match["value"]), match["holds"]

    assert row("1. RO occurs under PGD-AT") == (9.0, "yes")
    assert row("1. RO comes from the clean-loss term") == (8.0, "yes")
    assert row("1. Standard training robust-overfits") == (22.0, "yes")
    assert row("2. Gradient regularisation mitigates RO in standard") == (21.0, "yes")
    assert row("2. Gradient regularisation mitigates RO in AT") == (0.0, "inconclusive")  # 9 - 9, noisy
    assert row("3.") == (-0.8, "yes")
    assert row("4. AdvLC mitigates RO") == (9.0 - 13 / 6, "yes")
    assert row("4. AdvLC gives the best") == (9.0 - 13 / 6, "yes")  # last = 80 - gap
    assert row("x. Cross-paper (Stutz")[1] == "inconclusive"  # w_flat_avg not measured here


def test_weight_flatness_claim_is_the_rise_from_best_to_last():
    runs = pd.DataFrame(dict(variant="pgd_at", seed=[0, 1, 2], w_flat_avg_rise=[0.10, 0.12, 0.08]))
    row = claims_table(runs).set_index("claim").filter(like="x. Cross-paper", axis=0).iloc[0]
    assert row["value"] == pytest.approx(0.10) and row["holds"] == "yes"
    assert claims_table(runs.assign(w_flat_avg_rise=[-0.1, -0.12, -0.08])).iloc[6]["holds"] == "no"
    assert row["evidence"].endswith(": 0.100 ± 0.012 (se), 3 seed(s)")
    awp = claims_table(runs.assign(w_awp_gap_rise=[0.07, 0.08, 0.09])).iloc[7]
    assert awp["claim"].startswith("x. Cross-paper (Wu et al. 2020, AWP)") and awp["value"] == pytest.approx(0.08)
    assert awp["holds"] == "yes"


def test_missing_variants_are_reported_not_guessed():
    table = claims_table(_runs(pgd_at=[8.0, 9.0]))
    advlc = table[table["claim"] == "4. AdvLC mitigates RO"].iloc[0]
    assert advlc["holds"] == "inconclusive" and "not measured" in advlc["evidence"]
    assert math.isnan(advlc["value"])


def test_pm_one_rule_for_every_table():
    assert pm(2.345, 0.5) == "2.3 ± 0.5" and pm(2.345, 0.5, 2) == "2.35 ± 0.50"
    assert pm(7.6, math.nan, 0) == "8"  # one seed: no spread
    assert pm(-0.04, 0.01) == "0.0 ± 0.0" and pm(-0.004, math.nan, 2) == "0.00"  # never "-0.0"
    assert pm(-1.25, 0.5, 1) == "-1.2 ± 0.5"
    assert pm(math.nan, 1.0) == "–" and pm(math.inf, 1.0, missing="n/a") == "n/a"
    assert pm(1.0, 0.25, 2, label="se") == "1.00 ± 0.25 (se)" and pm(1.0, math.nan, label="se") == "1.0"


def test_claims_evidence_and_markdown_format_with_pm():
    runs = pd.DataFrame(dict(variant="pgd_at", seed=[0, 1, 2], gap=[8.0, 9.0, 10.0],
                             rho_curv_share=[-0.8, -0.9, -0.75]))
    table = claims_table(runs)
    by_claim = table.set_index("claim")
    assert by_claim.loc["1. RO occurs under PGD-AT", "evidence"].endswith(": 9.0 ± 0.6 (se), 3 seed(s)")
    rho = by_claim.filter(like="3.", axis=0).iloc[0]
    assert rho["evidence"].endswith(": -0.82 ± 0.04 (se), 3 seed(s)")
    md = claims_markdown(table.assign(value=[9.0, -0.001, np.nan, 1, 2, 3, 4, 5, 6, 7]))
    lines = md.splitlines()
    assert lines[:2] == ["| claim | evidence | value | holds |", "|---|---|---|---|"] and len(lines) == 12
    assert "| 9.00 | **yes** |" in lines[2] and "| 0.00 |" in lines[3] and "| – |" in lines[4]
