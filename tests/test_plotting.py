"""Figures drawn from small hand-built tables: what is drawn must equal the numbers in the table."""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landscape import plotting as P
from landscape.cli import main
from landscape.diagnose import spearman
from landscape.testing import synthetic_tables

# Robust test accuracy per epoch 1..6: best at epoch 3 (0.50), last 0.40 -> RO gap 10.0 points.
TEST_ADV = [0.20, 0.40, 0.50, 0.45, 0.42, 0.40]


def trajectory(runs=("at", "advlc")) -> pd.DataFrame:
    rows = []
    for k, run in enumerate(runs):
        for e in range(1, 7):
            for split in ("train", "test"):
                adv = TEST_ADV[e - 1] if split == "test" else 0.1 * e
                rows.append({
                    "run": run, "epoch": e, "split": split, "n": 100,
                    "acc_clean": min(1.0, adv + 0.3), "acc_adv": adv if k == 0 else adv / 2,
                    "loss_clean": 1.0 / e, "loss_adv": 2.0 - 0.1 * e + (0.05 * e * e if split == "test" else 0),
                    "grad_l1_mean": e * (k + 1.0), "grad_l1_q10": e * (k + 1.0) - 0.5,
                    "grad_l1_q90": e * (k + 1.0) + 0.5,
                    "curv_adv_mean": 10.0 * e + k, "curv_adv_q10": 10.0 * e + k - 1,
                    "curv_adv_q90": 10.0 * e + k + 1,
                })
    return pd.DataFrame(rows)


def png_of(fig, tmp_path, name="fig", dpi=80) -> np.ndarray:
    path = P.save_figure(fig, tmp_path / name, formats=("png",), dpi=dpi)[0]
    image = mpimg.imread(path)
    return image


def assert_real_png(image: np.ndarray, min_px: int = 150) -> None:
    h, w = image.shape[:2]
    assert h >= min_px and w >= min_px, (h, w)
    assert image[..., :3].std() > 0.05  # not a blank canvas


def lines_by_style(ax: Axes, color, ls: str):
    return [ln for ln in ax.get_lines() if mpl.colors.same_color(ln.get_color(), color) and ln.get_linestyle() == ls]


# ------------------------------------------------------------------------------------------ learning curves

def test_learning_curves_draw_the_table_in_percent_with_best_epoch_and_gap(tmp_path):
    table = trajectory()
    fig = P.plot_learning_curves(table)
    assert isinstance(fig, Figure)
    acc_at = fig.axes[0]
    assert acc_at.get_title() == "at" and acc_at.get_ylabel() == "accuracy (%)"
    robust_test = lines_by_style(acc_at, P.PALETTE[0], "-")
    np.testing.assert_allclose(robust_test[0].get_ydata(), np.array(TEST_ADV) * 100)
    np.testing.assert_array_equal(robust_test[0].get_xdata(), np.arange(1, 7))
    star = [ln for ln in acc_at.get_lines() if ln.get_marker() == "*"][0]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (3, pytest.approx(50.0))
    texts = " ".join(t.get_text() for t in acc_at.texts)
    assert "RO gap 10.0 pp" in texts and "best ep 3: 50.0%" in texts
    loss_at = fig.axes[2]  # row-major: accuracy row (at, advlc), then loss row
    assert loss_at.get_ylabel() == "cross-entropy loss (nats)" and loss_at.get_xlabel() == "epoch"
    assert_real_png(png_of(fig, tmp_path))


def test_learning_curves_accept_percent_and_metrics_without_loss_or_run():
    table = trajectory(("only",)).drop(columns=["run", "loss_clean", "loss_adv"])
    table[["acc_clean", "acc_adv"]] *= 100
    fig = P.plot_learning_curves(table)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1  # no loss row
    line = lines_by_style(fig.axes[0], P.PALETTE[0], "-")[0]
    np.testing.assert_allclose(line.get_ydata(), np.array(TEST_ADV) * 100)


def test_learning_curves_wrap_four_runs_and_share_accuracy_axis():
    table = pd.concat([trajectory((f"r{i}",)) for i in range(4)], ignore_index=True)
    fig = P.plot_learning_curves(table)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == ["r0", "r1", "r2", "r3"]
    acc_axes = [ax for ax in fig.axes if ax.get_title()]
    assert len({ax.get_ylim() for ax in acc_axes}) == 1


def test_learning_curves_missing_columns_name_them_and_the_function():
    with pytest.raises(ValueError, match=r"plot_learning_curves.*\['acc_clean'\]"):
        P.plot_learning_curves(trajectory().drop(columns=["acc_clean"]))
    with pytest.raises(TypeError, match="DataFrame"):
        P.plot_learning_curves({"epoch": [1]})
    with pytest.raises(ValueError, match="empty"):
        P.plot_learning_curves(trajectory().iloc[:0])


# ------------------------------------------------------------------------------------------ measures

def test_measures_one_panel_per_measure_mean_lines_bands_and_best_epoch(tmp_path):
    table = trajectory()
    fig = P.plot_measures(table, ["grad_l1", "curv_adv"])
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["input-gradient norm ‖∇ₓL‖₁", "curvature along adv. direction"]
    assert all(ax.get_xlabel() == "epoch" and ax.get_ylabel() for ax in panels)
    colors = dict(zip(["at", "advlc"], P.PALETTE))
    test_line = lines_by_style(panels[1], colors["advlc"], "-")[0]
    expect = table[(table.run == "advlc") & (table.split == "test")]["curv_adv_mean"].to_numpy()
    np.testing.assert_allclose(test_line.get_ydata(), expect)
    vlines = [ln for ln in panels[0].get_lines() if ln.get_linestyle() == ":"]
    assert sorted({float(ln.get_xdata()[0]) for ln in vlines}) == [3.0]  # both runs peak at epoch 3
    assert len(panels[0].collections) == 2  # one q10-q90 band per run (test split only)
    assert_real_png(png_of(fig, tmp_path))


def test_measures_default_to_the_papers_measures_and_reject_unknown():
    fig = P.plot_measures(trajectory(), splits=["test"])
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    with pytest.raises(ValueError, match=r"plot_measures.*\['taylor_gap_mean'\]"):
        P.plot_measures(trajectory(), ["taylor_gap"])
    with pytest.raises(ValueError, match="splits"):
        P.plot_measures(trajectory(), splits=["val"])
    with pytest.raises(ValueError, match="no '<measure>_mean' columns"):
        P.plot_measures(trajectory()[["epoch", "split", "acc_adv"]])
    assert P.available_measures(trajectory()) == ["grad_l1", "curv_adv"]


def test_measures_take_given_colours_for_lines_and_legend_so_figures_agree():
    from landscape.plotting.methods import method_colors

    colors = method_colors(["advlc", "at"])  # another order than the table's: advlc first
    fig = P.plot_measures(trajectory(), ["grad_l1"], splits=["test"], colors=colors)
    ax = [a for a in fig.axes if a.get_visible()][0]
    expect = trajectory()
    for run in ("at", "advlc"):
        line = lines_by_style(ax, colors[run], "-")[0]
        rows = expect[(expect.run == run) & (expect.split == "test")]
        np.testing.assert_allclose(line.get_ydata(), rows["grad_l1_mean"].to_numpy())
    legend = {t.get_text(): h for leg in fig.legends for t, h in zip(leg.get_texts(), leg.legend_handles)}
    assert mpl.colors.same_color(legend["advlc"].get_color(), colors["advlc"])
    assert not mpl.colors.same_color(colors["advlc"], P.PALETTE[1])  # really overridden (advlc is 2nd here)
    with pytest.raises(TypeError, match="plot_measures: colors must be a mapping"):
        P.plot_measures(trajectory(), ["grad_l1"], colors=["red", "blue"])


# ------------------------------------------------------------------------------------------ slices

def slices_1d() -> pd.DataFrame:
    a = np.linspace(-1, 1, 5)
    rows = []
    for epoch, k in ((3, 1.0), (6, 3.0)):
        for direction, scale in (("adversarial", 1.0), ("random", 0.1)):
            for s in range(4):
                loss = 0.5 + s * 0.1 + k * scale * a ** 2
                rows.append(pd.DataFrame({"sample": s, "direction": direction, "a": a, "loss": loss,
                                          "correct": loss < 1.0, "margin": 1 - loss, "epoch": epoch}))
    return pd.concat(rows, ignore_index=True)


def test_slices_1d_median_and_quantile_band_over_samples_by_default(tmp_path):
    table = slices_1d()
    fig = P.plot_slices_1d(table)
    adv, rnd = fig.axes[:2]
    assert adv.get_title() == "adversarial direction" and rnd.get_title() == "random direction"
    assert "a: step along adversarial" in adv.get_xlabel() and adv.get_ylabel() == "cross-entropy loss (nats)"
    late = [ln for ln in adv.get_lines() if ln.get_label() == "epoch 6"][0]
    a = np.linspace(-1, 1, 5)
    sample_losses = np.stack([0.5 + s * 0.1 + 3.0 * a ** 2 for s in range(4)])
    np.testing.assert_allclose(late.get_xdata(), a)
    np.testing.assert_allclose(late.get_ydata(), np.median(sample_losses, 0))
    band = adv.collections[1].get_paths()[0].vertices[:, 1]  # epoch 6 band: q10..q90 over the 4 samples
    assert band.max() == pytest.approx(np.quantile(sample_losses, 0.9, axis=0).max())
    assert band.min() == pytest.approx(np.quantile(sample_losses, 0.1, axis=0).min())
    assert band.min() >= sample_losses.min()  # a quantile band never leaves the data (mean - std can go < 0)
    assert adv.get_ylim() == rnd.get_ylim()  # shared y
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "median, q10–q90 over samples" in legend
    assert_real_png(png_of(fig, tmp_path))


def test_slices_1d_std_band_on_request():
    fig = P.plot_slices_1d(slices_1d(), band="std")
    adv = fig.axes[0]
    late = [ln for ln in adv.get_lines() if ln.get_label() == "epoch 6"][0]
    sample_losses = np.stack([0.5 + s * 0.1 + 3.0 * np.linspace(-1, 1, 5) ** 2 for s in range(4)])
    np.testing.assert_allclose(late.get_ydata(), sample_losses.mean(0))
    band = adv.collections[1].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx((sample_losses.mean(0) + sample_losses.std(0)).max())


def test_slices_1d_labels_from_label_epochs_and_accuracy_values():
    labelled = P.label_epochs(slices_1d(), {"best": 3, "last": 6})
    fig = P.plot_slices_1d(labelled, directions=["adversarial"], value="correct", band=None)
    ax = fig.axes[0]
    names = [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert names == ["best", "last"]
    best = [ln for ln in ax.get_lines() if ln.get_label() == "best"][0]
    a = np.linspace(-1, 1, 5)
    expect = np.mean([(0.5 + s * 0.1 + a ** 2) < 1.0 for s in range(4)], axis=0) * 100
    np.testing.assert_allclose(best.get_ydata(), expect)
    assert ax.get_ylabel() == "accuracy along slice (%)"


def test_slices_1d_validation():
    with pytest.raises(ValueError, match=r"plot_slices_1d.*\['direction'\]"):
        P.plot_slices_1d(slices_1d().drop(columns=["direction"]))
    with pytest.raises(ValueError, match="gradient"):
        P.plot_slices_1d(slices_1d(), directions=["gradient"])
    with pytest.raises(ValueError, match="band"):
        P.plot_slices_1d(slices_1d(), band="iqr")
    with pytest.raises(ValueError, match="value"):
        P.plot_slices_1d(slices_1d(), value="logits")


def slices_2d(epochs=(3, 6)) -> pd.DataFrame:
    a = np.linspace(-1, 1, 5)
    b = np.linspace(-0.5, 0.5, 3)
    A, B = np.meshgrid(a, b)
    parts = []
    for epoch in epochs:
        for s in range(2):
            loss = A + 10 * B + s + epoch
            parts.append(pd.DataFrame({"sample": s, "direction1": "adversarial", "direction2": "random",
                                       "a": A.ravel(), "b": B.ravel(), "loss": loss.ravel(),
                                       "correct": True, "margin": 0.0, "epoch": epoch}))
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=0)  # row order must not matter


def test_surface_grid_rebuilds_the_grid_for_a_sample_and_the_mean():
    one = slices_2d(epochs=(3,))
    A, B, Z = P.surface_grid(one, sample=1)
    assert Z.shape == (3, 5)
    np.testing.assert_allclose(A[0], np.linspace(-1, 1, 5))
    np.testing.assert_allclose(B[:, 0], np.linspace(-0.5, 0.5, 3))
    np.testing.assert_allclose(Z, A + 10 * B + 1 + 3)
    _, _, Zm = P.surface_grid(one, sample="mean")
    np.testing.assert_allclose(Zm, A + 10 * B + 0.5 + 3)
    with pytest.raises(ValueError, match="several rows per"):
        P.surface_grid(slices_2d(), sample=0)  # two epochs mixed
    with pytest.raises(ValueError, match="sample 7"):
        P.surface_grid(one, sample=7)


def test_surface_contour_and_3d_per_group_with_shared_colour_scale(tmp_path):
    fig = P.plot_surface(slices_2d(), sample=0)
    three_d = [ax for ax in fig.axes if ax.name == "3d"]
    contours = [ax for ax in fig.axes if ax.name != "3d" and ax.get_label() != "<colorbar>"]
    assert len(three_d) == 2 and len(contours) == 2
    assert [ax.get_title() for ax in contours] == ["epoch 3 (sample 0)", "epoch 6 (sample 0)"]
    assert "adversarial" in contours[0].get_xlabel() and "random" in contours[0].get_ylabel()
    # shared colour scale: both 3D panels span the global loss range (3 + 0 - 6 ... 6 + 0 + 6)
    for ax in three_d:
        assert ax.get_zlim() == pytest.approx((3 - 1 - 5, 6 + 1 + 5))
    assert_real_png(png_of(fig, tmp_path, dpi=72))
    ax = P.plot_contour(slices_2d(epochs=(3,)), sample="mean")
    assert isinstance(ax, Axes) and ax.get_xlabel().startswith("a: step along adversarial")
    with pytest.raises(ValueError, match="kind"):
        P.plot_surface(slices_2d(), kind="wireframe")
    with pytest.raises(TypeError, match="3D"):
        P.plot_surface_3d(slices_2d(epochs=(3,)), ax=Figure().add_subplot())


# ------------------------------------------------------------------------------------------ distributions

def samples_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    for run in ("at", "advlc"):
        for epoch, scale in ((3, 1.0), (6, 2.5)):
            for split in ("train", "test"):
                parts.append(pd.DataFrame({"run": run, "epoch": epoch, "split": split, "sample": np.arange(40),
                                           "grad_l1": rng.lognormal(np.log(scale), 0.3, 40),
                                           "curv_adv": rng.normal(5 * scale, 1.0, 40)}))
    return pd.concat(parts, ignore_index=True)


def test_distributions_hist_medians_per_group_and_run(tmp_path):
    table = samples_table()
    labelled = P.label_epochs(table, {"at": {"best": 3, "last": 6}, "advlc": {"best": 3, "last": 6}})
    fig = P.plot_distributions(labelled, ["grad_l1", "curv_adv"])
    assert len(fig.axes) == 4
    ax = fig.axes[2]  # second run, first measure
    assert ax.get_title() == "input-gradient norm ‖∇ₓL‖₁\nadvlc (test)"
    assert ax.get_ylabel() == "density" and "nats / unit input" in ax.get_xlabel()
    medians = sorted(float(ln.get_xdata()[0]) for ln in ax.get_lines() if ln.get_linestyle() == "--")
    rows = table[(table.run == "advlc") & (table.split == "test")]
    expect = sorted(rows.groupby("epoch")["grad_l1"].median())
    np.testing.assert_allclose(medians, expect)
    assert_real_png(png_of(fig, tmp_path))


def test_distributions_violin_log_and_validation(tmp_path):
    one = samples_table().query("run == 'at'").drop(columns=["run"])
    fig = P.plot_distributions(one, "grad_l1", kind="violin", log=True)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["epoch 3", "epoch 6"]
    assert_real_png(png_of(fig, tmp_path))
    with pytest.raises(ValueError, match=r"plot_distributions.*\['eig_top'\]"):
        P.plot_distributions(one, "eig_top")
    with pytest.raises(ValueError, match="kind"):
        P.plot_distributions(one, "grad_l1", kind="box")
    with pytest.raises(ValueError, match="split='val'"):
        P.plot_distributions(one, "grad_l1", split="val")


# ------------------------------------------------------------------------------------------ correlation

def test_epoch_pairs_and_spearman_against_the_rank_formula(tmp_path):
    table = trajectory(("at",))
    pairs = P.epoch_pairs(table, "curv_adv")
    np.testing.assert_allclose(pairs["x"], 10.0 * np.arange(1, 7))
    expect_y = 2.0 - 0.1 * np.arange(1, 7) + 0.05 * np.arange(1, 7) ** 2
    np.testing.assert_allclose(pairs["y"], expect_y)
    # hand reference: rho = 1 - 6 sum d^2 / (n (n^2 - 1)) for untied ranks
    x, y = np.array([1.0, 2, 3, 4, 5]), np.array([2.0, 1, 4, 3, 5])
    d = np.argsort(np.argsort(x)) - np.argsort(np.argsort(y))
    assert spearman(x, y) == pytest.approx(1 - 6 * (d ** 2).sum() / (5 * 24))
    assert np.isnan(spearman([1, 2], [3, 4])) and np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_measure_vs_loss_scatter_legend_has_rho_per_run(tmp_path):
    table = trajectory()
    ax = P.plot_measure_vs_loss(table, "curv_adv")
    assert isinstance(ax, Axes)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    y = 2.0 - 0.1 * np.arange(1, 7) + 0.05 * np.arange(1, 7) ** 2  # same loss for both runs
    rho = spearman(np.arange(6), y)
    assert legend == [f"at: Spearman ρ = {rho:.2f} (n = 6)", f"advlc: Spearman ρ = {rho:.2f} (n = 6)"]
    assert "curvature" in ax.get_xlabel() and ax.get_ylabel() == "robust test loss (CE, nats)"
    offsets = [c.get_offsets() for c in ax.collections if len(c.get_offsets())][0]  # first run's points
    np.testing.assert_allclose(offsets[:, 0], 10.0 * np.arange(1, 7))
    assert_real_png(png_of(ax, tmp_path))
    single = P.plot_measure_vs_loss(trajectory(("at",)), "grad_l1", measure_split="train")
    assert f"Spearman ρ = {spearman(np.arange(6), y):.2f}" in single.get_title()
    with pytest.raises(ValueError, match="statistic"):
        P.plot_measure_vs_loss(table, statistic="max")


def test_measure_vs_loss_rho_from_a_given_epoch_on():
    table = trajectory()
    e = np.arange(1, 7)
    y = np.array([3.0, 1.0, 1.5, 2.0, 2.5, 3.5])  # falls, then rises from epoch 2 on
    test = table["split"] == "test"
    table.loc[test, "loss_adv"] = np.tile(y, 2)
    ax = P.plot_measure_vs_loss(table, "curv_adv", since={"at": 3, "advlc": 1})
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"at: Spearman ρ = {spearman(e[2:], y[2:]):.2f} (epochs ≥ 3, n = 4)",
                      f"advlc: Spearman ρ = {spearman(e, y):.2f} (epochs ≥ 1, n = 6)"]
    assert spearman(e[2:], y[2:]) == pytest.approx(1.0) and spearman(e, y) < 1.0  # the window matters
    faded = [c for c in ax.collections if len(c.get_offsets()) == 2][0]  # epochs 1-2 of "at"
    np.testing.assert_allclose(faded.get_offsets()[:, 0], [10.0, 20.0])


# ------------------------------------------------------------------------------------------ helpers

def test_save_figure_formats_and_dpi(tmp_path):
    fig = P.plot_measure_vs_loss(trajectory(("at",))).figure
    paths = P.save_figure(fig, tmp_path / "sub" / "scatter", formats=("png", "pdf"), dpi=100)
    assert [p.name for p in paths] == ["scatter.png", "scatter.pdf"]
    assert paths[1].read_bytes()[:4] == b"%PDF"
    small = mpimg.imread(paths[0]).shape
    big = mpimg.imread(P.save_figure(fig, tmp_path / "big", formats=("png",), dpi=200)[0]).shape
    assert big[1] / small[1] == pytest.approx(2.0, rel=0.03)
    with pytest.raises(ValueError, match="gif"):
        P.save_figure(fig, tmp_path / "x", formats=("gif",))
    with pytest.raises(ValueError, match="dpi"):
        P.save_figure(fig, tmp_path / "x", dpi=10)
    with pytest.raises(TypeError):
        P.save_figure("not a figure", tmp_path / "x")


def test_label_epochs_flat_and_per_run():
    table = samples_table()
    flat = P.label_epochs(table.query("run == 'at'"), {"best": 3, "last": 6})
    assert flat.groupby("label")["epoch"].unique().map(list).to_dict() == {"best": [3], "last": [6]}
    both = P.label_epochs(table, {"at": {"best": 3, "last": 3}})
    assert set(both["run"]) == {"at"} and len(both) == 2 * len(table.query("run == 'at' and epoch == 3"))
    with pytest.raises(ValueError, match="none of the epochs"):
        P.label_epochs(table, {"best": 99})


def test_distributions_auto_log_only_for_positive_heavy_tails():
    table = pd.DataFrame({"epoch": 1, "wide": np.geomspace(1e-3, 10.0, 50), "narrow": np.linspace(1, 5, 50),
                          "signed": np.linspace(-1, 1000, 50)})
    fig = P.plot_distributions(table, ["wide", "narrow", "signed"], log="auto")
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "linear", "linear"]
    with pytest.raises(ValueError, match="log"):
        P.plot_distributions(table, "wide", log="yes")


def test_label_epochs_keeps_true_class_labels_and_figures_group_by_the_new_column():
    table = samples_table().query("run == 'at'").drop(columns=["run"])
    table["label"] = table["sample"] % 10  # true classes, as in samples.parquet
    labelled = P.label_epochs(table, {"best": 3, "last": 6})
    np.testing.assert_array_equal(labelled["label"], labelled["sample"] % 10)
    assert set(labelled["epoch_label"]) == {"best", "last"}
    fig = P.plot_distributions(labelled, "grad_l1", kind="violin")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["best", "last"]
    with pytest.raises(ValueError, match="already has a 'label' column"):
        P.label_epochs(table, {"best": 3}, column="label")


def test_plotting_leaves_global_matplotlib_settings_alone():
    before = dict(mpl.rcParams)
    P.plot_learning_curves(trajectory())
    P.plot_measures(trajectory())
    after = dict(mpl.rcParams)
    assert {k for k in before if before[k] != after[k]} == set()


def test_synthetic_trajectory_aggregates_its_samples():
    t = synthetic_tables("x", epochs=4, n=20, seed=1)
    traj, samples = t["trajectory"], t["samples"]
    for col in ("run", "epoch", "checkpoint", "split", "n", "acc_clean", "acc_adv", "loss_clean", "loss_adv",
                "grad_l1_mean", "curv_adv_q10", "logit_var_q90", "nonfinite", "error"):
        assert col in traj.columns
    row = traj[(traj.epoch == 2) & (traj.split == "test")].iloc[0]
    values = samples[(samples.epoch == 2) & (samples.split == "test")]["curv_adv"]
    assert row["curv_adv_mean"] == pytest.approx(values.mean())
    assert row["curv_adv_q90"] == pytest.approx(np.quantile(values, 0.9))
    assert set(t["slices_1d"]["epoch"]) == {int(traj[traj.split == "test"].set_index("epoch")["acc_adv"].idxmax()), 4}


# ------------------------------------------------------------------------------------------ CLI

def written(stdout: str) -> list[str]:
    """The paths a command's closing summary lists (indented lines, row counts stripped)."""
    return [line.strip().split("  (")[0] for line in stdout.splitlines() if line.startswith("  ")]


def test_cli_plot_writes_png_and_pdf(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    trajectory(("at",)).to_parquet(folder / "trajectory.parquet")
    slices_1d().to_parquet(folder / "slices_1d.parquet")
    assert main(["plot", "curves", str(folder), "--out", str(tmp_path / "out")]) == 0
    assert main(["plot", "slices1d", str(folder), "--best-last", "--out", str(tmp_path / "out")]) == 0
    printed = written(capsys.readouterr().out)
    assert [p.rsplit("/", 1)[1] for p in printed] == ["learning_curves.png", "learning_curves.pdf",
                                                      "slices_1d.png", "slices_1d.pdf"]
    assert_real_png(mpimg.imread(tmp_path / "out" / "slices_1d.png"))


def test_cli_plot_scatter_from_best_epoch(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    table = trajectory(("at",))
    table.loc[table["split"] == "test", "loss_adv"] = [3.0, 1.0, 1.5, 2.0, 2.5, 3.5]
    table.to_parquet(tmp_path / "run" / "trajectory.parquet")
    assert main(["plot", "scatter", str(tmp_path / "run"), "--from-best", "--format", "png",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert written(out) == [str(tmp_path / "out" / "measure_vs_loss.png")]
    assert out.splitlines()[0] == f"landscape plot: wrote 1 file(s) to {tmp_path / 'out'}"
    assert_real_png(mpimg.imread(tmp_path / "out" / "measure_vs_loss.png"))


def test_cli_plot_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["plot", "surface", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err
    (tmp_path / "t.csv").write_text("epoch,split\n1,test\n")
    assert main(["plot", "curves", str(tmp_path / "t.csv"), "--out", str(tmp_path)]) == 2
    assert "acc_clean" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ many runs

METHODS = ("standard", "pgd_at", "at_advlc", "at_gradreg")


def twelve_runs() -> pd.DataFrame:
    """4 methods x 3 seeds named like the digits demo's runs (``pgd_at/s0`` ...)."""
    return pd.concat([synthetic_tables(f"{m}/s{s}", epochs=6, n=4, ro=0.3 * i, seed=10 * i + s)["trajectory"]
                      for i, m in enumerate(METHODS) for s in range(3)], ignore_index=True)


def hue(color) -> float:
    return mpl.colors.rgb_to_hsv(mpl.colors.to_rgb(color))[0]


def test_measures_twelve_runs_share_a_colour_per_method_and_differ_per_seed(tmp_path):
    import warnings

    table = twelve_runs()
    fig = P.plot_measures(table, ["grad_l1"], splits=["test"])
    ax = fig.axes[0]
    color = {}
    for ln in ax.get_lines():
        if ln.get_linestyle() == "-":
            run = table[(table.split == "test") & np.isclose(table.grad_l1_mean, ln.get_ydata()[0])].run.iloc[0]
            color[run] = mpl.colors.to_hex(ln.get_color())
    assert len(color) == 12 and len(set(color.values())) == 12  # no colour reused (was: cycling after 10)
    for m in METHODS:  # one hue per method, shades per seed; methods apart by more than shading
        hues = [hue(color[f"{m}/s{s}"]) for s in range(3)]
        assert max(hues) - min(hues) < 0.02, (m, hues)
    method_hues = sorted(hue(color[f"{m}/s0"]) for m in METHODS)
    assert min(np.diff(method_hues)) > 0.05
    # legend: one column per method (seeds top to bottom), then the style keys
    texts = fig.legends[0].get_texts()
    assert [t.get_text() for t in texts] == [f"{m}/s{s}" for m in METHODS for s in range(3)] + [
        "test (mean)", "best epoch (median over seeds)", " "]  # the keys column padded to the seeds' height
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == len(METHODS)  # one best-epoch line per method, not one per seed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constrained layout must not give up
        assert_real_png(png_of(fig, tmp_path))
    x = [round(t.get_window_extent().x0) for t in texts]
    assert [len(set(x[i:i + 3])) for i in range(0, 15, 3)] == [1] * 5 and len(set(x)) == 5


def test_run_styles_group_only_method_seed_names():
    from landscape.plotting._style import run_styles

    plain = run_styles(["at", "advlc"])
    assert [s.color for s in plain.values()] == P.PALETTE[:2] and {s.group for s in plain.values()} == {None}
    many = run_styles([f"r{i}" for i in range(12)])  # no methods: 12 distinct colours, none reused
    assert len({mpl.colors.to_hex(s.color) for s in many.values()}) == 12
    same_folder = run_styles(["demo/pgd_at", "demo/at_advlc"])  # one "method": keep a colour per run
    assert [s.color for s in same_folder.values()] == P.PALETTE[:2]
    grouped = run_styles(["a/s0", "a/s1", "b/s0", "b/s1"])
    assert [s.group for s in grouped.values()] == ["a", "a", "b", "b"]
    assert [s.marker for s in grouped.values()] == ["o", "s", "o", "s"]


def test_measure_vs_loss_twelve_runs_keeps_its_axes_and_one_style_per_run(tmp_path):
    import warnings

    ax = P.plot_measure_vs_loss(twelve_runs(), "curv_adv", since=3)
    handles = ax.get_legend().legend_handles
    assert len({(mpl.colors.to_hex(h.get_color()), h.get_marker()) for h in handles}) == 12
    assert [h.get_marker() for h in handles[:3]] == ["o", "s", "^"]  # seeds of a method: own markers
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was: "constrained_layout not applied because axes sizes collapsed"
        assert_real_png(png_of(ax, tmp_path))
    width, height = ax.get_window_extent().size / ax.figure.dpi
    assert width > 3.0 and height > 2.5  # the legend below did not squeeze the axes


# ------------------------------------------------------------------------------------------ methods, registry

def test_seed_summary_is_mean_min_max_over_each_methods_runs():
    table = twelve_runs()
    summary = P.seed_summary(table, ["acc_adv", "curv_adv_mean"])
    assert list(pd.unique(summary["method"])) == list(METHODS)
    test = table[table["split"] == "test"]
    for method in ("pgd_at", "at_gradreg"):
        runs = test[test["run"].str.startswith(method + "/")]
        for col in ("acc_adv", "curv_adv_mean"):
            by_epoch = runs.pivot(index="epoch", columns="run", values=col)  # epochs x 3 seeds, by hand
            got = summary[(summary["method"] == method) & (summary["column"] == col)].set_index("epoch")
            np.testing.assert_allclose(got["mean"], by_epoch.mean(axis=1))
            np.testing.assert_allclose(got["lo"], by_epoch.min(axis=1))
            np.testing.assert_allclose(got["hi"], by_epoch.max(axis=1))
            assert (got["seeds"] == 3).all()


def test_method_curves_draw_the_seed_mean_and_the_min_max_band(tmp_path):
    table = twelve_runs()
    fig = P.plot_method_curves(table)
    acc = fig.axes[0]
    assert acc.get_title() == "robust accuracy" and [ax.get_xlabel() for ax in fig.axes[:3]] == ["epoch"] * 3
    lines = [ln for ln in acc.get_lines() if len(ln.get_xdata()) > 1]
    assert len(lines) == len(METHODS)  # one line per method, not per seed
    test = table[table["split"] == "test"]
    pgd = test[test["run"].str.startswith("pgd_at/")].pivot(index="epoch", columns="run", values="acc_adv") * 100
    np.testing.assert_allclose(lines[1].get_ydata(), pgd.mean(axis=1))
    band = acc.collections[1].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx(pgd.max(axis=1).max()) and band.min() == pytest.approx(pgd.min(axis=1).min())
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:4] == list(METHODS) and "min–max over seeds (line: mean)" in legend
    assert_real_png(png_of(fig, tmp_path))


def test_method_names_drop_the_folders_runs_share():
    table = synthetic_tables("x/runs/demo/pgd_at/s0", epochs=3, n=2)["trajectory"]
    other = synthetic_tables("x/runs/demo/at_advlc/s0", epochs=3, n=2)["trajectory"]
    both = pd.concat([table, other], ignore_index=True)
    assert list(pd.unique(P.seed_summary(both, ["acc_adv"])["method"])) == ["pgd_at", "at_advlc"]


def test_interactive_chart_hover_names_run_epoch_and_value():
    table = twelve_runs()
    chart = P.interactive_method_curves(table)
    seeds = [t for t in chart.data if t.name == "pgd_at/s1"]
    assert len(seeds) == 3  # one per panel: robust acc, clean acc, robust loss
    tmpl = seeds[0].hovertemplate
    assert "run pgd_at/s1" in tmpl and "epoch %{x}" in tmpl and "%{y" in tmpl
    rows = table[(table["run"] == "pgd_at/s1") & (table["split"] == "test")].sort_values("epoch")
    np.testing.assert_allclose(seeds[0].y, rows["acc_adv"] * 100)
    means = [t for t in chart.data if t.name == "pgd_at" and t.showlegend]
    assert len(means) == 1 and "mean of" in means[0].hovertemplate
    html = chart.to_html(full_html=False, include_plotlyjs=False)
    assert "<script" in html and "cdn.plot.ly" not in html  # plotly.js is not fetched from a CDN


def test_distributions_tiny_values_put_the_power_of_ten_in_the_axis_label(tmp_path):
    samples = pd.DataFrame({"curv_adv": np.random.default_rng(0).normal(3e-6, 1e-6, 200), "split": "test"})
    fig = P.plot_distributions(samples, "curv_adv", by=None)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xlabel().endswith("(× 1e-6)")
    assert ax.xaxis.get_offset_text().get_text() == ""  # no separate "1e-6" that could sit on the label
    lo, hi = ax.get_xlim()
    assert 0 < hi < 10  # the values drawn are in units of 1e-6
    assert_real_png(png_of(fig, tmp_path))


def test_every_registered_figure_draws_from_a_study_and_plot_offers_each(tmp_path):
    from landscape.commands.plot import _kinds
    from landscape.diagnose import best_last_epochs
    from landscape.runs import find_runs, load_tables
    from landscape.testing import write_synthetic_study

    root = write_synthetic_study(tmp_path / "demo", methods={"pgd_at": 1.0, "at_advlc": 0.2}, seeds=(0, 1),
                                 epochs=5, n=6)
    runs = find_runs(root)
    assert _kinds() == list(P.FIGURES)
    epochs = best_last_epochs(load_tables([r.folder for r in runs], "trajectory"))
    not_shown = []
    for name, spec in P.FIGURES.items():
        table = load_tables([r.folder for r in runs if spec.table in r.files], spec.table)
        if not spec.shown_for(table):  # opt-in measures (drawn in their own tests)
            not_shown.append(name)
            continue
        if spec.best_last:
            table = P.label_epochs(table, {r: e for r, e in epochs.items() if (table["run"] == r).any()})
        if spec.per_run:
            table = table[table["run"] == table["run"].iloc[0]]
        fig = spec.draw(table, since={r: e["best"] for r, e in epochs.items()})
        assert fig.axes, name
        fig.clf()
    assert not_shown == []
    with pytest.raises(ValueError, match="unknown figure 'nope'; known: method_curves"):
        P.figure_spec("nope")
    with pytest.raises(ValueError, match="already registered"):
        P.register(P.FIGURES["scatter"])


def test_findings_figure_marks_every_method_at_the_median_of_its_diagnosed_best_epochs(tmp_path):
    """The study's findings figure: one dotted line per method, at the median over seeds of the best epochs the
    findings table reports (the diagnosis of each metrics.csv), not at the seed-mean curve's maximum."""
    from landscape.study.experiments import findings_figure
    from landscape.study.findings import log_best_epoch
    from landscape.testing import write_synthetic_study

    methods = {"pgd_at": 1.0, "at_advlc": 0.2}
    root = write_synthetic_study(tmp_path / "demo", methods=methods, seeds=(0, 1, 2), epochs=6, n=6)
    fig = findings_figure(root, list(methods), (0, 1, 2), {"epochs": 6, "every": 1})
    want = {m: float(np.median([log_best_epoch(pd.read_csv(root / m / f"s{s}" / "metrics.csv")) for s in range(3)]))
            for m in methods}
    ax = fig.axes[0]
    dotted = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":")
    assert dotted == sorted(want.values())  # every method, at_advlc included
    assert "median over seeds of the diagnosed best epochs" in fig._suptitle.get_text()


def test_six_study_methods_get_six_distinct_colours():
    """standard, standard_gradreg and at_clean_half used to get orange, vermillion and brown (alike)."""
    import itertools

    from landscape.plotting.methods import method_colors

    methods = sorted(("standard", "standard_gradreg", "pgd_at", "at_clean_half", "at_advlc", "at_gradreg"))
    colors = method_colors(methods)
    apart = min(np.linalg.norm(np.subtract(colors[a], colors[b])) for a, b in itertools.combinations(methods, 2))
    assert apart > 0.25, colors  # (orange vs vermillion: 0.2)


def test_first_order_share_draws_one_best_epoch_line_per_method(tmp_path):
    table = twelve_runs()
    table["fo_share_median"] = 0.5 + 0.01 * table["epoch"]
    table["curv_adv_mean"] = table.get("curv_adv_mean", table["epoch"] * 1.0)
    best = {f"{m}/s{s}": 2 + s for m in METHODS for s in range(3)}  # seeds at 2, 3, 4: median 3
    fig = P.plot_first_order_share(table, best_epochs=best)
    for ax in fig.axes[:2]:
        dotted = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"]
        assert dotted == [3.0] * len(METHODS)
    assert "best epoch (median over seeds)" in [t.get_text() for t in fig.legends[0].get_texts()]
    P.save_figure(fig, tmp_path / "fo", formats=["png"])


def test_distributions_of_twelve_runs_wrap_into_rows_of_four(tmp_path):
    samples = pd.concat([synthetic_tables(f"m{i}", epochs=3, n=20, seed=i)["samples"] for i in range(12)],
                        ignore_index=True)
    fig = P.plot_distributions(samples, "grad_l1", transpose=True)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 12
    rows = sorted({round(ax.get_position().y0, 3) for ax in shown})
    assert len(rows) == 3 and fig.get_size_inches()[0] < 4 * 4.5  # 3 rows of 4, not one row of 12
    two = P.plot_distributions(samples[samples["run"].isin(["m0", "m1", "m2", "m3", "m4", "m5"])],
                               ["grad_l1", "curv_adv"], transpose=True)  # 6 methods x 2 measures: 2 blocks of 4
    assert sum(ax.get_visible() for ax in two.axes) == 12 and len(two.axes) == 16
    P.save_figure(fig, tmp_path / "d12", formats=["png"])
    P.save_figure(two, tmp_path / "d6x2", formats=["png"])
