"""ranking: measures ranked by their Spearman ρ with the test robust loss after the best epoch, across runs,
checked against scipy's ρ on the same epochs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from landscape.diagnose import diagnose
from landscape.ranking import RANK_COLUMNS, rank_measures, space_of

# test robust accuracy: best at epoch 4, then a sustained drop (robust overfitting from epoch 5 on)
OVERFIT = [0.30, 0.35, 0.40, 0.45, 0.43, 0.41, 0.40, 0.38, 0.37, 0.35]
FLAT = [0.30, 0.35, 0.40, 0.45, 0.447, 0.449, 0.446, 0.448, 0.447, 0.446]


def _table(acc, loss, columns: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for i, a in enumerate(acc):
        row = {"epoch": i + 1, "split": "test", "acc_adv": a, "acc_clean": a + 0.3, "loss_adv": loss[i], "n": 1000}
        row.update({f"{m}_mean": v[i] for m, v in columns.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _run(seed: int, acc=OVERFIT):
    rng = np.random.default_rng(seed)
    loss = 2.0 - np.asarray(acc) + rng.normal(0, 0.002, len(acc))
    cols = {"w_trace": list(loss * 10 + rng.normal(0, 0.001, len(acc))),       # tracks the loss
            "grad_l1": list(-loss + rng.normal(0, 0.05, len(acc))),            # anti-tracks, noisily
            "curv_adv": list(rng.normal(0, 1, len(acc)))}                      # noise
    return diagnose(_table(acc, loss, cols), threshold=1.0), loss, cols


def test_ranking_matches_scipy_spearman_per_run_and_orders_by_abs_mean():
    runs = {f"s{i}": _run(i) for i in range(3)}
    table = rank_measures({k: d for k, (d, _, _) in runs.items()})
    assert list(table.columns) == RANK_COLUMNS
    expected = {}
    for d, loss, cols in runs.values():
        best = d.best_epoch
        for m, v in cols.items():
            rho = stats.spearmanr(np.asarray(v)[best - 1:], loss[best - 1:]).statistic
            expected.setdefault(m, []).append(rho)
    for m, rhos in expected.items():
        row = table[table["measure"] == m].iloc[0]
        assert row["spearman_mean"] == pytest.approx(np.mean(rhos), abs=1e-12)
        assert row["spearman_sd"] == pytest.approx(np.std(rhos, ddof=1), abs=1e-12)
        assert row["spearman_min"] == pytest.approx(min(rhos)) and row["spearman_max"] == pytest.approx(max(rhos))
        assert row["runs"] == 3
    order = sorted(expected, key=lambda m: -abs(np.mean(expected[m])))
    assert table["measure"].tolist() == order
    assert table["rank"].tolist() == [1, 2, 3]
    assert table.set_index("measure").loc["w_trace", "space"] == "weight"
    assert table.set_index("measure").loc["w_trace", "spearman_mean"] == pytest.approx(1.0)


def test_runs_without_overfitting_are_left_out_unless_asked():
    d_over, _, _ = _run(0)
    d_flat, _, _ = _run(1, acc=FLAT)
    assert d_flat.onset_epoch is None and d_over.onset_epoch is not None
    only = rank_measures({"a": d_over, "b": d_flat})
    assert set(only["runs"]) == {1}
    both = rank_measures({"a": d_over, "b": d_flat.to_dict()}, overfitting_only=False)
    assert set(both["runs"]) == {2}


def test_split_filter_error_entries_and_empty_result():
    d, _, _ = _run(0)
    assert rank_measures({"a": d}, split="train").empty
    assert list(rank_measures({"a": {"error": "bad"}}).columns) == RANK_COLUMNS
    with pytest.raises(TypeError, match="mapping"):
        rank_measures([d])


def test_companion_columns_and_loss_levels_are_not_ranked():
    rng = np.random.default_rng(0)
    loss = 2.0 - np.asarray(OVERFIT)
    cols = {"w_trace": list(loss), "w_trace_se": list(loss), "w_eig_top_res": list(-loss), "w_awp": list(loss),
            "w_awp_gap": list(loss + rng.normal(0, 0.01, len(loss)))}
    table = rank_measures({"a": diagnose(_table(OVERFIT, loss, cols), threshold=1.0)})
    assert sorted(table["measure"]) == ["w_awp_gap", "w_trace"]


def test_space_of_names():
    assert space_of("w_flat_worst") == "weight" and space_of("curv_adv") == "input"
