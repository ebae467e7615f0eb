"""landscape.study.monitor: the demo's monitor hook and the scoring of the early warning against metrics.csv."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from landscape.monitor import PatienceRule
from landscape.runs import Run
from landscape.study.experiments import study_config
from landscape.study.monitor import (
    EVAL_FILE,
    evaluate_warnings,
    probe_for,
    signal_leads,
    train_monitored,
    warning_markdown,
    warning_summary,
)


def _write_run(root, variant, seed, full_acc, probe_acc, probe_loss=None):
    folder = root / variant / f"s{seed}"
    (folder / "monitor").mkdir(parents=True)
    n = len(full_acc)
    epochs = np.arange(1, n + 1)
    pd.DataFrame({"epoch": epochs, "split": "test", "acc_adv": full_acc}).to_csv(folder / "metrics.csv", index=False)
    loss = probe_loss if probe_loss is not None else 1 - np.asarray(probe_acc)
    traj = pd.DataFrame({"run": "r", "epoch": epochs, "checkpoint": "c", "split": "test", "n": 10,
                         "acc_adv": probe_acc, "loss_adv": loss, "curv_adv_mean": 1.0 + 0.1 * epochs,
                         "fo_share_median": 1.0 - 0.001 * epochs, "error": None})
    Run(folder / "monitor").write("trajectory", traj)
    return folder


def test_scores_against_the_official_best_of_the_full_evaluation(tmp_path):
    full = [0.1, 0.5, 0.7, 0.6, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4]
    _write_run(tmp_path, "pgd_at", 0, full, probe_acc=[0.1, 0.5, 0.6, 0.7, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4])
    _write_run(tmp_path, "at_advlc", 0, [0.1, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6],
               probe_acc=[0.1, 0.5, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6])
    table = evaluate_warnings(tmp_path, {"p3": PatienceRule(3)})
    assert (tmp_path / EVAL_FILE).is_file()
    ro = table[table["variant"] == "pgd_at"].iloc[0]
    assert ro["best_epoch"] == 3 and ro["warn_epoch"] == 7 and ro["kept_epoch"] == 4 and ro["lag"] == 4
    assert ro["lost_kept_pts"] == pytest.approx(10.0)  # the probe kept epoch 4 (0.6), the best was 0.7
    assert ro["lost_at_warning_pts"] == pytest.approx(30.0)
    assert ro["within_10pct"] == False
    ok = table[table["variant"] == "at_advlc"].iloc[0]
    assert ok["false_alarm"] and ok["warn_epoch"] == 6
    summary = warning_summary(table).iloc[0]
    assert summary["false_alarms"] == 1 and summary["within_10pct"] == 0
    assert "p3" in warning_markdown(table, rule="p3")


def test_monitor_for_attaches_a_monitor_to_a_demo_run(tmp_path):
    cfg = dict(study_config(quick=True), epochs=3)
    folder = train_monitored(tmp_path, "pgd_at", 0, cfg)
    traj = Run(folder / "monitor").read("trajectory")
    assert traj["epoch"].tolist() == [1, 2, 3]
    metrics = pd.read_csv(folder / "metrics.csv")
    assert metrics["epoch"].max() == 3
    table = evaluate_warnings(tmp_path, write=False)
    assert set(table["rule"]) >= {"landscape", "patience_10"}
    assert len(signal_leads(tmp_path)) == 1


def test_probe_is_held_out_from_the_training_subset():
    from landscape.datasets import load_dataset

    cfg = study_config(quick=True)
    x, _ = probe_for(0, cfg, n=40)
    xt, _ = load_dataset("digits", "train", n=cfg["train_n"], seed=0)
    flat, train_flat = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    assert len(x) == 40
    assert not any(bool((train_flat == row).all(1).any()) for row in flat)


def test_docs_blocks_are_generated_from_the_committed_tables():
    from pathlib import Path

    from landscape.study.monitor import LEADS_FILE, leads_markdown, rule_markdown

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "monitor.md").read_text()
    table = pd.read_csv(root / "docs" / "results" / EVAL_FILE)
    leads = pd.read_csv(root / "docs" / "results" / LEADS_FILE)
    assert warning_markdown(table) in text
    assert leads_markdown(leads) in text
    assert rule_markdown() in text
