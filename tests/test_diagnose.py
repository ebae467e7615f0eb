"""diagnose: synthetic trajectory tables with hand-known best epoch, gap, onset and correlations."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from landscape.cli import main
from landscape.diagnose import (
    default_threshold,
    diagnose,
    diagnose_runs,
    onset_epoch,
    read_table,
    spearman,
)

# test robust accuracy per epoch 1..10: best at epoch 4 (0.45); epoch 6 dips 1.5 points below the best but
# epoch 7 recovers to 0.3 below, so the sustained drop (>= 1 point) starts at epoch 8.
TEST_ACC = [0.30, 0.35, 0.40, 0.45, 0.445, 0.43, 0.447, 0.40, 0.39, 0.38]
TRAIN_ACC = [0.30, 0.38, 0.46, 0.55, 0.60, 0.66, 0.70, 0.75, 0.80, 0.86]


def make_table(test_acc=TEST_ACC, train_acc=TRAIN_ACC, *, n=None, run=None, measure=None, loss=None):
    rows = []
    for i, (te, tr) in enumerate(zip(test_acc, train_acc)):
        epoch = i + 1
        for split, acc in (("train", tr), ("test", te)):
            row = {"epoch": epoch, "split": split, "acc_adv": acc, "acc_clean": min(1.0, acc + 0.3),
                   "loss_adv": (loss[i] if loss is not None and split == "test" else 2.0 - acc), "error": None}
            if n is not None:
                row["n"] = n
            if measure is not None:
                row["grad_l1_mean"] = measure[i] * (1 if split == "test" else 2)
            if run is not None:
                row["run"] = run
            rows.append(row)
    return pd.DataFrame(rows)


def test_best_epoch_gap_and_onset_with_explicit_threshold():
    d = diagnose(make_table(), threshold=1.0)
    assert d.best_epoch == 4 and d.best_acc_adv == pytest.approx(0.45)
    assert d.last_epoch == 10 and d.last_acc_adv == pytest.approx(0.38)
    assert d.gap == pytest.approx(7.0)
    assert d.onset_epoch == 8
    assert d.train_test_gap_last == pytest.approx(100 * (0.86 - 0.38))
    assert d.n_epochs == 10


def test_onset_threshold_decides_onset():
    # 0.5 points: epoch 5 (0.445) is already 0.5 below, but epoch 7 (0.447, 0.3 below) breaks the run
    assert diagnose(make_table(), threshold=0.5).onset_epoch == 8
    # 0.2 points: every epoch after the best is at least 0.3 below -> onset right after the best
    assert diagnose(make_table(), threshold=0.2).onset_epoch == 5
    # 8 points: the last epoch is only 7 below -> no onset
    assert diagnose(make_table(), threshold=8.0).onset_epoch is None


def test_default_threshold_uses_binomial_standard_error():
    # n = 500: 2 * 100 * sqrt(.45 * .55 / 500) = 4.45 points -> epochs 8, 9, 10 are 5, 6, 7 points below
    d = diagnose(make_table(n=500))
    assert d.onset_threshold == pytest.approx(2 * 100 * math.sqrt(0.45 * 0.55 / 500))
    assert d.onset_epoch == 8
    # n = 100: threshold 9.95 points -> never that far below
    d = diagnose(make_table(n=100))
    assert d.onset_threshold == pytest.approx(9.9499, abs=1e-3)
    assert d.onset_epoch is None
    # without n: 1 point; and never below 1 point however large n is
    assert diagnose(make_table()).onset_threshold == 1.0
    assert default_threshold(0.45, 10**9) == 1.0


def test_onset_epoch_helper_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        acc = rng.uniform(0.2, 0.5, size=12)
        epochs = np.arange(12) * 2
        best = int(np.argmax(acc))
        thr = float(rng.uniform(0, 10))
        expected = None
        for i in range(best + 1, 12):  # direct reading of the definition
            if all((acc[best] - acc[j]) * 100 >= thr for j in range(i, 12)):
                expected = int(epochs[i])
                break
        assert onset_epoch(epochs, acc, best, thr) == expected


def test_no_overfitting_when_best_is_last():
    acc = [0.1, 0.2, 0.3, 0.4]
    d = diagnose(make_table(acc, acc))
    assert d.best_epoch == 4 and d.gap == 0.0 and d.onset_epoch is None


def test_correlation_from_best_epoch_on_is_monotone():
    loss = [3.0, 2.0, 1.5, 1.0, 1.1, 1.3, 1.2, 1.6, 1.8, 2.5]
    # before the best epoch the measure runs against the loss; from epoch 4 on it is a monotone (non-linear)
    # function of the test robust loss
    measure = [1.0, 1.5, 2.0] + [math.exp(v) for v in loss[3:]]
    d = diagnose(make_table(loss=loss, measure=measure), threshold=1.0)
    c = d.correlations.set_index(["measure", "split"])
    assert c.loc[("grad_l1", "test"), "spearman"] == pytest.approx(1.0)
    assert c.loc[("grad_l1", "test"), "n"] == 7
    expected_r = np.corrcoef(measure[3:], loss[3:])[0, 1]
    assert c.loc[("grad_l1", "test"), "pearson"] == pytest.approx(expected_r)
    assert expected_r < 0.999  # non-linear, so Pearson is below 1 while Spearman is exactly 1
    # the train measure (2x the test one) correlates the same way with the *test* loss
    assert c.loc[("grad_l1", "train"), "spearman"] == pytest.approx(1.0)
    # over all epochs it would not be monotone: the window matters
    assert stats.spearmanr(measure, loss).statistic < 0.9


def test_correlation_needs_three_epochs():
    acc = [0.2, 0.3, 0.4, 0.45, 0.44]  # best at epoch 4 -> epochs 4, 5 only
    d = diagnose(make_table(acc, acc, measure=[1, 2, 3, 4, 5]))
    assert d.correlations["spearman"].isna().all() and (d.correlations["n"] == 2).all()
    assert any("fewer than 3 epochs" in note for note in d.notes)


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    g = np.random.default_rng(seed)
    x, y = g.integers(0, 5, 12).astype(float), g.normal(size=12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert spearman(pd.Series(x), list(y)) == spearman(x, y)  # any sequence


def test_spearman_uses_the_finite_pairs_only():
    x, y = [1.0, 2.0, np.nan, 4.0, 5.0, 6.0], [2.0, 1.0, 9.0, np.inf, 4.0, 3.0]
    assert spearman(x, y) == pytest.approx(stats.spearmanr([1, 2, 5, 6], [2, 1, 4, 3]).statistic)
    assert math.isnan(spearman([1.0, 2.0, np.nan], [3.0, 1.0, 2.0]))  # 2 finite pairs
    assert math.isnan(spearman([1.0, 1.0, 1.0], [3.0, 1.0, 2.0]))  # constant
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2, 3], [1, 2])


def test_scatter_rho_is_the_diagnosis_rho():
    """The measure-vs-loss figure's ρ (the report passes each run's best epoch as ``since``) is the
    diagnosis' ρ of that measure with the test robust loss: same epochs, same pairs, same function."""
    from landscape.plotting import epoch_pairs, plot_measure_vs_loss

    loss = [3.0, 2.0, 1.5, 1.0, 1.1, 1.3, 1.2, 1.6, 1.8, 2.5]
    measure = [1.0, 1.5, 2.0, 0.4, 0.5, np.nan, 0.5, 0.7, 0.2, 0.9]  # a tie, a missing epoch, not monotone
    table = make_table(loss=loss, measure=measure)
    d = diagnose(table, threshold=1.0)
    rec = d.correlations.set_index(["measure", "split"]).loc[("grad_l1", "test")]
    pairs = epoch_pairs(table, "grad_l1")
    used = pairs[pairs["epoch"] >= d.best_epoch]
    assert spearman(used["x"], used["y"]) == rec["spearman"] and len(used) == rec["n"] == 6
    ax = plot_measure_vs_loss(table, "grad_l1", since=d.best_epoch)
    assert f"Spearman ρ = {rec['spearman']:.2f} (epochs ≥ {d.best_epoch})" in ax.get_title()
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


def test_single_epoch_gives_measures_and_train_test_gap_only():
    d = diagnose(make_table([0.4], [0.7], measure=[2.5]))
    assert d.best_epoch is None and d.gap is None and d.onset_epoch is None
    assert d.last_epoch == 1 and d.last_acc_adv == pytest.approx(0.4)
    assert d.train_test_gap_last == pytest.approx(30.0)
    assert d.measures == {"test": {"grad_l1": 2.5}, "train": {"grad_l1": 5.0}}
    assert "one epoch" in d.summary() or "one epoch" in " ".join(d.notes)


def test_failed_rows_and_duplicated_epochs():
    t = make_table([0.3, 0.5, 0.4], [0.3, 0.5, 0.6])
    bad = pd.DataFrame([{"epoch": 2, "split": "test", "acc_adv": np.nan, "error": "CheckpointError: truncated",
                         "checkpoint": "e2b.pt"}])
    dup = pd.DataFrame([{"epoch": 3, "split": "test", "acc_adv": 0.2, "loss_adv": 1.0, "error": None}])
    d = diagnose(pd.concat([t, bad, dup], ignore_index=True), threshold=1.0)
    assert d.best_epoch == 2
    assert d.last_acc_adv == pytest.approx((0.4 + 0.2) / 2)  # duplicated epoch 3 averaged
    assert any("failed" in note for note in d.notes) and any("duplicated" in note for note in d.notes)


def test_several_runs():
    a = make_table(run="a")
    b = make_table([0.2, 0.3, 0.35], [0.2, 0.4, 0.5], run="b")
    both = pd.concat([a, b], ignore_index=True)
    with pytest.raises(ValueError, match="diagnose_runs"):
        diagnose(both)
    runs = diagnose_runs(both, threshold=1.0)
    assert runs["run"].tolist() == ["a", "b"]
    assert runs.set_index("run").loc["a", "onset_epoch"] == 8
    assert runs.set_index("run").loc["b", "best_epoch"] == 3
    assert pd.isna(runs.set_index("run").loc["b", "onset_epoch"])
    assert runs.set_index("run").loc["b", "gap"] == pytest.approx(0.0)


@pytest.mark.parametrize("bad, match", [
    (pd.DataFrame({"epoch": [1], "split": ["test"]}), "acc_adv"),
    (pd.DataFrame({"epoch": [1, 2], "split": ["test", "test"], "acc_adv": [45.0, 40.0]}), "percent"),
    (pd.DataFrame({"epoch": [1], "split": ["train"], "acc_adv": [0.4]}), "split 'test'"),
])
def test_bad_tables_raise_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        diagnose(bad)


def test_not_a_dataframe():
    with pytest.raises(TypeError, match="DataFrame"):
        diagnose({"epoch": [1]})


def test_to_dict_is_json_and_summary_mentions_key_numbers():
    d = diagnose(make_table(measure=list(range(10))), threshold=1.0)
    payload = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert payload["best_epoch"] == 4 and payload["onset_epoch"] == 8
    assert payload["correlations"][0]["measure"] == "grad_l1"
    text = d.summary()
    assert "epoch 4" in text and "epoch 8" in text and "7.0 points" in text


def test_read_table_and_cli(tmp_path, capsys):
    t = make_table(n=500)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    t.to_parquet(run_dir / "trajectory.parquet")
    pd.testing.assert_frame_equal(read_table(run_dir), t)
    t.drop(columns=["error"]).to_csv(tmp_path / "metrics.csv", index=False)
    assert read_table(tmp_path / "metrics.csv")["acc_adv"].tolist() == t["acc_adv"].tolist()

    assert main(["diagnose", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "45.0% at epoch 4" in out and "from epoch 8" in out
    assert main(["diagnose", str(tmp_path / "metrics.csv"), "--json", "--threshold", "8"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["onset_epoch"] is None and payload["best_epoch"] == 4
    log_only = tmp_path / "trained"  # a training run folder with its log and no trajectory yet
    log_only.mkdir()
    (tmp_path / "metrics.csv").rename(log_only / "metrics.csv")
    assert main(["diagnose", str(log_only), "--json", "--threshold", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["best_epoch"] == 4
    assert main(["diagnose", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_text_cells_from_csv_are_left_out_not_crashing():
    table = pd.DataFrame({"epoch": [1, 2, 3], "split": "test", "acc_adv": ["0.5", "abc", "0.4"],
                          "curv_adv_mean": [None, None, None]})
    d = diagnose(table)
    assert (d.best_epoch, d.last_epoch) == (1, 3)
    assert d.gap == pytest.approx(10.0)
    assert any("without a robust accuracy" in n for n in d.notes)


def test_fractional_epochs_are_refused():
    table = pd.DataFrame({"epoch": [1, 1.5], "split": "test", "acc_adv": [0.5, 0.4]})
    with pytest.raises(ValueError, match="whole numbers, got 1.5"):
        diagnose(table)


# ------------------------------------------------------------------ one best epoch, the official rule

def test_best_index_keeps_the_latest_epoch_on_ties():
    from landscape.diagnose import best_index

    assert best_index([0.1, 0.5, 0.3, 0.5, 0.2]) == 3
    assert best_index([0.5, float("nan"), 0.5]) == 2
    assert best_index([0.7]) == 0
    # brute force: the largest index whose value equals the maximum
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 4, size=12) / 4
        assert best_index(a) == max(i for i, v in enumerate(a) if v == a.max())
    with pytest.raises(ValueError, match="no finite"):
        best_index([float("nan")])


def test_tied_best_picks_the_latest_epoch_everywhere():
    from landscape.diagnose import best_epoch
    from landscape.plotting._tables import best_and_last

    acc = [0.30, 0.45, 0.40, 0.45, 0.38]
    table = make_table(acc, TRAIN_ACC[:5])
    assert diagnose(table).best_epoch == 4
    assert best_epoch(table).epoch == 4
    assert best_and_last(np.arange(1, 6), np.array(acc))[0] == 4


def test_training_log_is_the_source_of_the_best_epoch():
    from landscape.diagnose import SOURCE_LOG, SOURCE_TABLE, best_epoch

    # analysed subset (epochs 1..10, best 4) vs the full-test-set training log: best at epoch 7
    log_acc = [0.30, 0.35, 0.40, 0.44, 0.445, 0.43, 0.46, 0.40, 0.39, 0.38]
    log = make_table(log_acc, TRAIN_ACC)[["epoch", "split", "acc_adv"]]
    d = diagnose(make_table(), log=log, threshold=1.0)
    assert d.best_epoch == 7 and d.best_acc_adv == pytest.approx(0.46) and d.best_source == SOURCE_LOG
    assert d.gap == pytest.approx(8.0) and d.onset_epoch == 8
    assert "training log" in d.summary()
    assert set(d.correlations["n"]) <= {4}  # epochs 7..10 of the analysed table
    assert diagnose(make_table()).best_source == SOURCE_TABLE
    be = best_epoch(make_table(), log=log)
    assert (be.epoch, be.source, be.last_epoch) == (7, SOURCE_LOG, 10)
    # a log without usable test rows falls back to the table, with a note
    bad = diagnose(make_table(), log=log[log["split"] == "train"])
    assert bad.best_epoch == 4 and bad.best_source == SOURCE_TABLE
    assert any("training log not used" in n for n in bad.notes)


def test_cli_diagnose_reads_the_training_log_beside_the_analysis(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "analysis").mkdir(parents=True)
    make_table().to_parquet(run / "analysis" / "trajectory.parquet")
    log_acc = [0.30, 0.35, 0.40, 0.44, 0.445, 0.43, 0.46, 0.40, 0.39, 0.38]
    make_table(log_acc, TRAIN_ACC)[["epoch", "split", "acc_adv"]].to_csv(run / "metrics.csv", index=False)
    assert main(["diagnose", str(run / "analysis"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["best_epoch"] == 7 and out["best_source"].startswith("training log")
    assert main(["diagnose", str(run / "analysis"), "--json", "--log", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["best_epoch"] == 4


# ------------------------------------------------- one best epoch everywhere (issue 27: what the user sees agrees)

LOG_ACC = [0.30, 0.35, 0.40, 0.44, 0.445, 0.43, 0.46, 0.40, 0.39, 0.38]  # best at 7; the trajectory's is 4


def _run_with_log(tmp_path):
    run = tmp_path / "pgd_at"
    run.mkdir()
    make_table(measure=[0.1 * i for i in range(1, 11)]).to_parquet(run / "trajectory.parquet")
    make_table(LOG_ACC, TRAIN_ACC)[["epoch", "split", "acc_adv", "acc_clean"]].to_csv(run / "metrics.csv",
                                                                                      index=False)
    return run


def test_plot_best_last_diagnose_and_report_name_the_same_best_epoch(tmp_path, capsys):
    import argparse

    from landscape.commands import plot as plot_cmd
    from landscape.diagnose import best_last_epochs, diagnosis_of, run_diagnoses
    from landscape.report.data import load_runs
    from landscape.runs import Run, load_tables

    run = _run_with_log(tmp_path)
    owner = diagnosis_of(Run(run))  # the run folder's one diagnosis, which the three below must agree with
    assert owner.best_epoch == 7 and owner.best_source.startswith("training log")
    assert main(["diagnose", str(run), "--json"]) == 0
    diagnosed = json.loads(capsys.readouterr().out)
    assert diagnosed["best_epoch"] == owner.best_epoch  # from metrics.csv, not the trajectory's 4
    assert load_runs(run).diagnoses["pgd_at"]["best_epoch"] == owner.best_epoch
    report = load_runs(run).best_last()
    args = argparse.Namespace(tables=[str(run)])
    table = load_tables([str(run)], "trajectory")
    labelled = plot_cmd._best_last(args, table, plot_cmd._diagnoses(args))  # what `plot --best-last` keeps
    plotted = dict(zip(labelled["label"], labelled["epoch"]))
    assert plotted == {"best": owner.best_epoch, "last": owner.last_epoch} == {"best": 7, "last": 10}
    assert report == {"pgd_at": {"best": 7, "last": 10}}
    assert {r: e["best"] for r, e in best_last_epochs(table, logs={"": read_table(run / "metrics.csv")}).items()} \
        == {"": 7}
    assert run_diagnoses([run])[""].best_epoch == diagnosed["best_epoch"]
    # the command itself, and with several run folders (each with its own log)
    other = tmp_path / "at_advlc"
    shutil.copytree(run, other)
    both = run_diagnoses([run, other])
    assert {r: d.best_epoch for r, d in both.items()} == {"pgd_at": 7, "at_advlc": 7}
    assert main(["plot", "measures", str(run), str(other), "--best-last", "--out", str(tmp_path / "f"),
                 "--format", "png"]) == 0
    # a folder of runs: `landscape diagnose` gives each run its own diagnosis (with its own log), as the report
    parent = tmp_path / "study"
    shutil.copytree(run, parent / "pgd_at")
    shutil.copytree(run, parent / "at_advlc")
    capsys.readouterr()
    assert main(["diagnose", str(parent), "--json"]) == 0
    per_run = {d["run"]: d["best_epoch"] for d in json.loads(capsys.readouterr().out)}
    assert per_run == {r: d["best_epoch"] for r, d in load_runs(parent).diagnoses.items()} \
        == {"pgd_at": 7, "at_advlc": 7}


def test_diagnose_and_plot_curves_name_the_source_and_the_same_gap(tmp_path, capsys):
    from landscape.diagnose import run_diagnoses
    from landscape.plotting import figure_spec

    run = _run_with_log(tmp_path)
    assert main(["diagnose", str(run)]) == 0
    text = capsys.readouterr().out
    assert "from metrics.csv (training log)" in text and "best - last: 8.0 points" in text
    d = run_diagnoses([run])
    fig = figure_spec("curves").draw(load_table_of(run), diagnoses={r: x.to_dict() for r, x in d.items()})
    shown = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "RO gap 8.0 pp" in shown and "best ep 7" in shown and "from metrics.csv (training log)" in shown
    # no log: both say the trajectory table
    (run / "metrics.csv").unlink()
    assert main(["diagnose", str(run)]) == 0
    assert "from trajectory.parquet (analysed subset)" in capsys.readouterr().out
    d = run_diagnoses([run])
    fig = figure_spec("curves").draw(load_table_of(run), diagnoses={r: x.to_dict() for r, x in d.items()})
    shown = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "best ep 4" in shown and "from trajectory.parquet" in shown
    assert main(["plot", "curves", str(run), "--out", str(tmp_path / "f"), "--format", "png"]) == 0


def load_table_of(run):
    from landscape.runs import load_tables

    return load_tables([run], "trajectory")


def test_summary_puts_notes_first_and_leaves_out_undefined_correlations():
    table = make_table(TEST_ACC[:2], TRAIN_ACC[:2], measure=[0.1, 0.2])  # two checkpoints
    d = diagnose(table)
    text = d.summary()
    assert "nan" not in text and "n=1" not in text
    lines = text.splitlines()
    first_note = next(i for i, ln in enumerate(lines) if ln.strip().startswith("note:"))
    assert first_note == 1  # right under the heading, before the numbers it explains
    assert any("undefined" in ln for ln in lines)
    assert any("fewer than 3 epochs" in n for n in d.notes)
    # defined correlations are still listed
    assert "grad_l1 (test)" in diagnose(make_table(measure=list(range(10)))).summary()


def test_the_report_and_run_diagnoses_read_each_trajectory_once(tmp_path, monkeypatch):
    """The diagnosis is taken from the table the caller already read through the same Run, not read again."""
    import landscape.runs as runs_module
    from landscape.diagnose import run_diagnoses
    from landscape.report.data import load_runs

    run = _run_with_log(tmp_path)
    reads = []
    real = runs_module.read_table_file

    def counting(path):
        reads.append(Path(path).name)
        return real(path)

    import landscape.report.data as report_data

    monkeypatch.setattr(runs_module, "read_table_file", counting)
    monkeypatch.setattr(report_data, "read_table_file", counting)
    assert load_runs(run).diagnoses["pgd_at"]["best_epoch"] == 7
    assert reads.count("trajectory.parquet") == 1
    reads.clear()
    assert run_diagnoses([run])[""].best_epoch == 7
    assert reads.count("trajectory.parquet") == 1
