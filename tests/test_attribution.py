"""attribution: the margin measure, stable sample ids, per-sample histories, the scores, the CLI and figure."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from landscape.attribution import (SCORES, attribute, learning_epochs, rank_scores, score_samples,
                                   top_precision)
from landscape.cli import main
from landscape.datasets import Subset, load_dataset, open_dataset, select, stratified_indices
from landscape.measures import measure
from landscape.measures.margin import logit_margin, margin
from landscape.trajectory import analyse_trajectory, read_histories
from landscape.trajectory.worker import dataset_indices

HIDDEN = (16,)


# ------------------------------------------------------------------------------------------------ margin
def test_logit_margin_hand_values():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 3.0], [1.0, 1.0, 0.0], [-4.0, -2.0, -3.0]])
    y = torch.tensor([0, 1, 2, 0])
    # 2-1, 3-3 (tie with the other max), 0-1, -4-(-2)
    assert logit_margin(logits, y).tolist() == [1.0, 0.0, -1.0, -2.0]
    with pytest.raises(ValueError, match="K >= 2"):
        logit_margin(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))


def test_margin_of_a_linear_model_matches_its_logits():
    lin = nn.Linear(3, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.5, 0.5]]))
        lin.bias.zero_()
    x = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.2, 0.3]])
    y = torch.tensor([0, 3])
    # logits [0.9, .2, .1, .6] -> 0.9-0.6 = 0.3; [0.1, .2, .3, .3] -> 0.3-0.3 = 0
    assert torch.allclose(margin(lin.train(), x, y), torch.tensor([0.3, 0.0]), atol=1e-6)
    assert lin.training  # mode restored


def test_margin_measure_columns_agree_with_correctness(tiny_model):
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 10
    df = measure(tiny_model, x, y, eps=0.1, steps=2, measures=["logit_margin"])
    assert {"margin_clean", "margin_adv"} <= set(df.columns)
    assert ((df["margin_clean"] > 0) == df["correct_clean"]).all()
    assert ((df["margin_adv"] > 0) == df["correct_adv"]).all()
    with torch.no_grad():
        direct = logit_margin(tiny_model.eval()(x), y)
    np.testing.assert_allclose(df["margin_clean"].to_numpy(), direct.numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ sample ids
def test_dataset_indices_follow_subsets_to_the_dataset():
    ds = open_dataset((torch.rand(50, 1, 2, 2), torch.arange(50) % 5), "train")
    assert dataset_indices(ds).tolist() == list(range(50))
    sub = select(ds, 20, seed=3)
    np.testing.assert_array_equal(dataset_indices(sub), stratified_indices(ds.targets, 20, 3))
    nested = Subset(sub, [5, 0, 7])
    assert dataset_indices(nested).tolist() == [int(sub.indices[5]), int(sub.indices[0]), int(sub.indices[7])]


def _checkpoints(folder, epochs=(1, 2, 3), seed=0):
    from landscape.checkpoints import save_checkpoint

    torch.manual_seed(seed)
    from landscape import create_model

    model = create_model("mlp", hidden=HIDDEN)
    paths = []
    for e in epochs:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        paths.append(save_checkpoint(folder / f"model_e{e:03d}.pt", model, epoch=e))
    return paths


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trajectory run folder over 3 checkpoints on 30 digits training samples, with train histories."""
    folder = tmp_path_factory.mktemp("attr")
    paths = _checkpoints(folder)
    analyse_trajectory(paths, "mlp", "digits", out_dir=folder / "analysis", arch_kwargs={"hidden": HIDDEN}, n=30,
                       steps=2, eps=0.1, seed=1, measures=["grad", "curv_adv", "logit_margin"], progress=False, splits=("train",),
                       retry_delay=0.01, histories=True)
    return folder / "analysis"


def test_histories_have_stable_ids_equal_to_dataset_indices(tiny_run):
    h = read_histories(tiny_run)
    expect = stratified_indices(open_dataset("digits", "train").targets, 30, 1)  # what select(n=30, seed=1) takes
    assert sorted(h["epoch"].unique().tolist()) == [1, 2, 3]
    for _, part in h.groupby("epoch"):
        assert sorted(part["sample_id"].tolist()) == expect.tolist()
    assert h["split"].astype(str).eq("train").all()
    assert h["loss_adv"].dtype == np.float32 and h["margin_adv"].dtype == np.float32
    assert {"sample_id", "epoch", "label", "loss_clean", "loss_adv", "correct_clean", "correct_adv", "grad_l1",
            "curv_adv", "margin_clean", "margin_adv"} <= set(h.columns)
    y = load_dataset("digits", "train")[1].numpy()
    np.testing.assert_array_equal(h["label"].to_numpy(), y[h["sample_id"].to_numpy()])
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tiny_run / "histories.parquet").num_row_groups == 3  # streamed: one per checkpoint
    samples = pd.read_parquet(tiny_run / "samples.parquet")
    assert (samples["sample_id"].to_numpy() == expect[samples["sample"].to_numpy()]).all()


def test_histories_of_an_unmeasured_split_fail_before_the_run(tmp_path):
    paths = _checkpoints(tmp_path, epochs=(1,))
    with pytest.raises(ValueError, match="histories for split"):
        analyse_trajectory(paths, "mlp", "digits", out_dir=tmp_path / "a", arch_kwargs={"hidden": HIDDEN}, n=10,
                           splits=("test",), histories=True, progress=False)
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------------ scores
def _hand_history():
    """4 samples x epochs 1..4; best epoch 2."""
    rows = []
    loss = {0: [2.0, 1.5, 1.0, 0.5], 1: [1.0, 1.0, 1.0, 1.0], 2: [3.0, 3.0, 2.0, 0.1], 3: [0.5, 0.2, 0.1, 0.1]}
    curv = {0: [0.1, 0.1, 0.2, 0.3], 1: [0.2, 0.2, 0.2, 0.2], 2: [0.1, 0.1, 0.5, 0.9], 3: [0.3, 0.2, 0.1, 0.0]}
    ok = {0: [0, 0, 1, 1], 1: [0, 1, 0, 0], 2: [0, 0, 0, 1], 3: [1, 1, 1, 1]}
    for s in range(4):
        for e in range(4):
            rows.append(dict(sample_id=10 + s, epoch=e + 1, split="train", label=s, loss_adv=loss[s][e],
                             curv_adv=curv[s][e], correct_adv=bool(ok[s][e]), correct_clean=True))
    return pd.DataFrame(rows)


def test_scores_against_hand_values():
    s = score_samples(_hand_history(), best_epoch=2).set_index("sample_id")
    np.testing.assert_allclose(s["memorisation"], [1.0, 0.0, 2.9, 0.1])
    np.testing.assert_allclose(s["curvature_growth"], [0.2, 0.0, 0.8, -0.2], atol=1e-12)
    np.testing.assert_array_equal(s["learning_epoch"].to_numpy(), [3.0, np.nan, 4.0, 1.0])
    r = rank_scores(s.reset_index()).set_index("sample_id").sort_index()
    # memorisation ranks 2,4,1,3; curvature 2,3,1,4; learning (never first) 3,1,2,4 -> means
    np.testing.assert_allclose(r["combined"], [7 / 3, 8 / 3, 4 / 3, 11 / 3])
    assert rank_scores(s.reset_index())["sample_id"].tolist() == [12, 10, 11, 13]


def test_learning_epoch_edge_cases():
    h = pd.DataFrame({"sample_id": [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3, "epoch": [5, 10, 20] * 4,
                      "correct_adv": [False, False, False,   # never learned
                                      True, True, False,     # learned then forgotten
                                      True, True, True,      # learned from the first epoch
                                      True, False, True]})   # forgotten then learned again: from 20
    le = learning_epochs(h)
    assert math.isnan(le[1]) and math.isnan(le[2])
    assert le[3] == 5 and le[4] == 20


def test_attribute_table_and_precision():
    ranked = attribute(_hand_history(), best_epoch=2)
    assert ranked["rank"].tolist() == [1, 2, 3, 4] and list(ranked.columns[:3]) == ["rank", "sample_id", "label"]
    assert ranked.attrs["best_epoch_used"] == 2 and ranked.attrs["last_epoch"] == 4
    assert attribute(_hand_history(), best_epoch=2, by="memorisation")["sample_id"].tolist()[:2] == [12, 10]
    p = top_precision(ranked, [12, 13])
    assert p == {"k": 2, "hits": 1, "precision": 0.5, "recall": 0.5, "chance": 0.5}
    assert attribute(_hand_history(), best_epoch=9).attrs["best_epoch_used"] == 4  # nearest analysed epoch
    with pytest.raises(ValueError, match="best_epoch is required"):
        attribute(_hand_history())
    with pytest.raises(ValueError, match="by must be one of"):
        attribute(_hand_history(), best_epoch=2, by="loss")
    with pytest.raises(ValueError, match="lacks column"):
        attribute(_hand_history().drop(columns="loss_adv"), best_epoch=2)


def test_command_scores_match_the_library():
    from landscape.commands.attribute import SCORES as CLI_SCORES

    assert CLI_SCORES == SCORES


# ----------------------------------------------------------------------------------------- end to end
def test_cli_end_to_end(tiny_run, tmp_path, capsys):
    out = tmp_path / "ranking.csv"
    assert main(["attribute", str(tiny_run), "--top", "3", "--best-epoch", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "30 train samples" in text and "best epoch 2" in text
    table = pd.read_csv(out)
    assert len(table) == 30 and table["rank"].tolist() == list(range(1, 31))
    direct = attribute(tiny_run, best_epoch=2)
    assert table["sample_id"].tolist() == direct["sample_id"].tolist()


@pytest.mark.parametrize("argv, message", [
    (["attribute", "/no/such/run"], "no such run folder"),
    (["attribute", "{run}", "--out", "x.txt"], "--out must end in .csv"),
    (["attribute", "{run}", "--top", "0"], "--top"),
])
def test_cli_bad_input_is_one_line_exit_2(tiny_run, capsys, argv, message):
    argv = [a.replace("{run}", str(tiny_run)) for a in argv]
    with pytest.raises(SystemExit) if "--top" in argv else _nothing() as exc:
        code = main(argv)
    code = exc.value.code if exc is not None and hasattr(exc, "value") else code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_a_training_run_folder_is_read_through_its_analysis_folder(tiny_run):
    direct = attribute(tiny_run, best_epoch=2)
    via_parent = attribute(tiny_run.parent, best_epoch=2)
    pd.testing.assert_frame_equal(direct, via_parent)


def test_run_without_histories_needs_results(tmp_path):
    from landscape import LandscapeError

    with pytest.raises(LandscapeError, match="no trajectory results"):
        attribute(tmp_path, best_epoch=1)


# ---------------------------------------------------------------------------------------------- figure
def test_figure_with_images_and_without(tiny_run):
    from matplotlib.figure import Figure

    from landscape.plotting.attribution import as_image, plot_attribution

    ranked = attribute(tiny_run, best_epoch=2)
    history = read_histories(tiny_run)
    x = load_dataset("digits", "train")[0]
    fig = plot_attribution(ranked, history, images=x, top=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 3  # image + curve + twin per sample
    fig = plot_attribution(ranked, history, top=2, per_row=1)
    assert len(fig.axes) == 2 * 2
    assert as_image(np.zeros(64)).shape == (8, 8) and as_image(np.zeros(10)) is None
    assert as_image(np.zeros((3, 4, 5))).shape == (4, 5, 3) and as_image(np.zeros((1, 4, 5))).shape == (4, 5)
    with pytest.raises(ValueError, match="top"):
        plot_attribution(ranked, history, top=0)


# ------------------------------------------------------------------------------------- evidence tables
def test_study_summaries_and_generated_block(tmp_path):
    from landscape.study.attribution import _summaries, evidence_markdown, update_doc
    from landscape.runs import write_file

    precision = pd.DataFrame([dict(seed=s, score=sc, k=10, hits=h, precision=h / 10, recall=h / 10, chance=0.2)
                              for s in range(3) for sc, h in (("memorisation", 7 + s), ("combined", 8 + s))])
    gaps = {"combined": [1.0, 2.0, 1.5], "random": [5.0, 6.0, 5.5], "flipped": [5.0, 6.5, 5.0]}
    retrain = pd.DataFrame([dict(seed=s, removal=r, k=10, best=80.0, last=80.0 - g[s], gap=g[s])
                            for r, g in gaps.items() for s in range(3)])
    prec, comp, claims = _summaries(precision, retrain)
    assert prec.set_index("score").loc["combined", "precision"] == pytest.approx(0.9)
    c = comp.set_index("removal")
    assert c.loc["combined", "shrink_vs_random"] == pytest.approx(4.0) and c.loc["combined", "shrink_se"] == 0
    assert c.loc["combined", "verdict"] == "yes" and c.loc["flipped", "verdict"] == "inconclusive"
    assert claims["holds"].tolist()[0] == "yes" and "combined" in claims["evidence"][0]
    for name, t in (("precision", prec), ("retrain", comp), ("claims", claims)):
        write_file(tmp_path / f"attribution_{name}.csv", t)
    doc = tmp_path / "a.md"
    doc.write_text("x\n<!-- BEGIN generated:attribution -->\nSTALE\n<!-- END generated:attribution -->\ny\n")
    assert update_doc(doc, tmp_path) and not update_doc(doc, tmp_path)  # a second run changes nothing
    text = doc.read_text()
    assert "| combined | 90.0 ± 5.8 % |" in text and "STALE" not in text and text.endswith("y\n")
    assert evidence_markdown(tmp_path) in text


def test_trajectory_command_writes_the_same_histories(tiny_run, tmp_path, capsys):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    _checkpoints(folder)
    out = tmp_path / "cli_run"
    argv = ["trajectory", str(folder), "--arch", "mlp", "--arch-arg", f"hidden={HIDDEN}", "--data", "digits",
            "--n", "30", "--steps", "2", "--eps", "0.1", "--seed", "1", "--measures", "grad,curv_adv,logit_margin",
            "--splits", "train", "--out", str(out), "--histories", "--quiet"]
    assert main(argv) == 0
    assert "histories.parquet" in capsys.readouterr().out
    cli, lib = read_histories(out), read_histories(tiny_run)
    cols = ["sample_id", "epoch", "loss_adv", "curv_adv", "margin_adv"]
    key = ["epoch", "sample_id"]
    pd.testing.assert_frame_equal(cli[cols].sort_values(key).reset_index(drop=True),
                                  lib[cols].sort_values(key).reset_index(drop=True))


def test_report_shows_the_top_ranked_samples(tiny_run, tmp_path):
    import re

    from landscape.report import build_report

    # with a test split the best epoch is known (the train-only tiny_run is skipped with its reason)
    skipped = build_report(tiny_run, tmp_path / "skipped", dpi=72).read_text()
    assert "attribution skipped: no usable rows for split &#39;test&#39;" in skipped
    run = tmp_path / "run"
    run.mkdir()
    analyse_trajectory(_checkpoints(run), "mlp", "digits", out_dir=run / "analysis", arch_kwargs={"hidden": HIDDEN},
                       n=30, steps=2, eps=0.1, seed=1, measures=["grad", "curv_adv"], progress=False,
                       retry_delay=0.01, histories=True)
    tiny_run = run / "analysis"
    html = build_report(tiny_run, tmp_path / "report", dpi=72).read_text()
    assert 'id="attribution"' in html and 'data-figure="attribution_' in html
    section = html.split('id="attribution"')[1].split("<tbody>")[1].split("</tbody>")[0]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", section)]
    direct = attribute(tiny_run)
    assert [int(r[1]) for r in rows] == direct["sample_id"].head(len(rows)).tolist() and len(rows) == 8
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Which training samples drive robust overfitting" in md


def test_a_train_only_history_file_is_rebuilt_when_another_split_is_asked(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    analyse_trajectory(_checkpoints(run), "mlp", "digits", out_dir=run / "analysis", arch_kwargs={"hidden": HIDDEN},
                       n=30, steps=2, eps=0.1, seed=1, measures=["grad", "curv_adv"], progress=False,
                       retry_delay=0.01, histories=True)  # train only, as --histories writes by default
    assert set(read_histories(run / "analysis", splits=None)["split"].astype(str)) == {"train"}
    ranked = attribute(run, split="test", best_epoch=2)  # the training run folder; test rows built on demand
    assert len(ranked) == 30 and set(read_histories(run, splits=None)["split"].astype(str)) == {"train", "test"}
