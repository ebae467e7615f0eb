"""The claims rule on hand-made per-run summaries; Spearman against scipy."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from landscape.claims import CLAIM_COLUMNS, claims_table, effect, spearman, verdict


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
    assert list(table.columns) == CLAIM_COLUMNS and len(table) == 8

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


def test_missing_variants_are_reported_not_guessed():
    table = claims_table(_runs(pgd_at=[8.0, 9.0]))
    advlc = table[table["claim"] == "4. AdvLC mitigates RO"].iloc[0]
    assert advlc["holds"] == "inconclusive" and "not measured" in advlc["evidence"]
    assert math.isnan(advlc["value"])


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    g = np.random.default_rng(seed)
    x, y = g.integers(0, 5, 12).astype(float), g.normal(size=12)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y)[0])


def test_spearman_needs_three_finite_pairs():
    assert math.isnan(spearman([1.0, 2.0, np.nan], [3.0, 1.0, 2.0]))
    assert math.isnan(spearman([1.0, 1.0, 1.0], [3.0, 1.0, 2.0]))
