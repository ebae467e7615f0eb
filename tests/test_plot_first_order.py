"""plot_first_order_share: curvature and first-order share per epoch, from a trajectory table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from landscape.plotting import plot_first_order_share


def _table():
    rows = []
    for run, k in (("pgd_at", 1.0), ("at_advlc", 0.5)):
        for epoch in range(1, 6):
            for split in ("train", "test"):
                rows.append({"run": run, "epoch": epoch, "split": split, "curv_adv_mean": k * epoch,
                             "fo_share_median": 1.0 / (1 + k * epoch), "fo_share_mean": 2.0,
                             "acc_adv": [0.3, 0.5, 0.5, 0.4, 0.35][epoch - 1]})
    return pd.DataFrame(rows)


def test_draws_curvature_and_share_per_run_and_marks_the_latest_tied_best():
    fig = plot_first_order_share(_table())
    assert isinstance(fig, Figure)
    ax_c, ax_s = fig.axes[:2]
    curv = [ln for ln in ax_c.lines if ln.get_linestyle() == "-"]
    share = [ln for ln in ax_s.lines if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 2]
    np.testing.assert_allclose(curv[0].get_ydata(), np.arange(1, 6))
    np.testing.assert_allclose(curv[1].get_ydata(), 0.5 * np.arange(1, 6))
    np.testing.assert_allclose(share[0].get_ydata(), 1 / (1 + np.arange(1, 6)))
    best = {ln.get_xdata()[0] for ln in ax_c.lines if ln.get_linestyle() == ":"}
    assert best == {3}  # tie at epochs 2 and 3: the latest
    assert "curvature" in ax_c.get_title() and "median" in ax_s.get_title()
    given = plot_first_order_share(_table(), best_epochs={"pgd_at": 5, "at_advlc": 2})
    assert {ln.get_xdata()[0] for ln in given.axes[0].lines if ln.get_linestyle() == ":"} == {5, 2}
    mean = plot_first_order_share(_table(), stat="mean")
    assert all(np.allclose(ln.get_ydata(), 2.0) for ln in mean.axes[1].lines
               if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 2)


def test_errors_name_the_missing_columns():
    t = _table()
    with pytest.raises(ValueError, match="fo_share_median"):
        plot_first_order_share(t.drop(columns=["fo_share_median"]))
    with pytest.raises(ValueError, match="curvature column"):
        plot_first_order_share(t.drop(columns=["curv_adv_mean"]))
    with pytest.raises(ValueError, match="stat"):
        plot_first_order_share(t, stat="max")
    with pytest.raises(ValueError, match="split"):
        plot_first_order_share(t[t["split"] == "train"])


def test_report_shows_the_first_order_figure_only_for_tables_with_the_share():
    import pandas as pd

    from landscape.plotting import figure_spec

    spec = figure_spec("first_order_share")
    assert spec.shown_for(pd.DataFrame(columns=["epoch", "split", "fo_share_median", "curv_adv_mean"]))
    assert not spec.shown_for(pd.DataFrame(columns=["epoch", "split", "curv_adv_mean"]))
