"""The methods-comparison study's claims rows (landscape.study.methods) on hand-made per-run tables."""
import math

import pandas as pd
import pytest

from landscape.study.methods import comparison_table, efficiency_claim, robustness_claim


def _runs(diffs: dict[str, list[float]], base=50.0):
    rows = []
    for seed in range(len(next(iter(diffs.values())))):
        rows.append(dict(variant="at_advlc", seed=seed, last=base + seed, best=base + seed + 1))
        for peer, d in diffs.items():
            rows.append(dict(variant=peer, seed=seed, last=base + seed - d[seed], best=base + seed + 1 - d[seed]))
    return pd.DataFrame(rows)


def test_paired_differences_their_se_and_the_minimal_detectable_effect():
    runs = _runs({"pgd_at": [1.0, 2.0, 3.0], "trades": [-1.0, 0.0, 1.0]})
    t = comparison_table(runs, peers=("pgd_at", "trades"), metrics=("last",)).set_index("peer")
    assert t.loc["pgd_at", "diff"] == pytest.approx(2.0)
    assert t.loc["pgd_at", "se"] == pytest.approx(1.0 / math.sqrt(3))  # sd 1 of the paired differences
    assert t.loc["pgd_at", "mde"] == pytest.approx(2 / math.sqrt(3)) and t.loc["pgd_at", "n"] == 3
    assert t.loc["pgd_at", "holds"] == "yes" and t.loc["trades", "holds"] == "inconclusive"


@pytest.mark.parametrize("diffs, holds", [
    ({"pgd_at": [1.0, 2.0, 3.0], "mart": [2.0, 3.0, 4.0]}, "yes"),
    ({"pgd_at": [1.0, 2.0, 3.0], "mart": [-2.0, -3.0, -4.0]}, "no"),
    ({"pgd_at": [1.0, 2.0, 3.0], "mart": [-1.0, 0.0, 1.0]}, "inconclusive"),
])
def test_robustness_claim_needs_every_peer_beaten(diffs, holds):
    rows = robustness_claim(_runs(diffs), peers=tuple(diffs), metrics=("last", "best"))
    assert list(rows["holds"]) == [holds, holds]
    assert "2·se" in rows["evidence"].iloc[0] and "3 seed(s)" in rows["evidence"].iloc[0]


def test_untrained_peer_keeps_the_claim_from_holding():
    rows = robustness_claim(_runs({"pgd_at": [1.0, 2.0, 3.0]}), peers=("pgd_at", "llr"), metrics=("last",))
    assert rows["holds"].iloc[0] == "inconclusive" and "not trained: llr" in rows["evidence"].iloc[0]


def test_efficiency_claim_from_the_benchmark_table():
    def bench(advlc):
        return pd.DataFrame([dict(device="cpu", method=m, vs_pgd_at=v, vs_pgd_at_sd=0.01, repeats=9, steps=7,
                                  forwards=9) for m, v in (("pgd_at", 1.0), ("at_advlc", advlc), ("llr", 1.5),
                                                           ("cure", 1.3))])
    assert efficiency_claim(bench(1.1), peers=("llr", "cure"))["holds"].iloc[0] == "yes"
    assert efficiency_claim(bench(1.4), peers=("llr", "cure"))["holds"].iloc[0] == "no"
    assert efficiency_claim(None)["holds"].iloc[0] == "inconclusive"
