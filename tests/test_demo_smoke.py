"""End-to-end smoke test of the digits robust-overfitting study (``landscape demo --quick``)."""
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from landscape.checkpoints import load_model
from landscape.cli import main as cli_main
from landscape.datasets import load_dataset
from landscape.study import experiments, findings
from landscape.study.claims import CLAIM_COLUMNS

METHODS = list(experiments.DEFAULT_VARIANTS)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    threads = torch.get_num_threads()
    try:
        assert cli_main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the script pins 1 thread for its tiny models
    return out


def test_epoch_selection_hand_values():
    d = experiments
    assert d.epochs_to_analyse(150, 10, 42) == [1, 10, 20, 30, 40, 42, 50, 60, 70, 80, 90, 100, 110, 120, 130,
                                                140, 150]
    assert d.epochs_to_analyse(6, 3, 3) == [1, 3, 6]
    metrics = pd.DataFrame(dict(epoch=[1, 1, 2, 2, 3, 3], split=["train", "test"] * 3,
                                acc_adv=[0.9, 0.2, 0.9, 0.5, 0.9, 0.5]))
    assert findings.log_best_epoch(metrics) == 3  # test split only; the latest epoch on ties (official rule)


def test_demo_writes_report_and_every_run(demo_dir):
    html = (demo_dir / "report.html").read_text()
    assert (demo_dir / "figures" / "findings_measures.png").stat().st_size > 10_000
    for m in METHODS:
        assert f"{m}/s0" in html
        run = demo_dir / m / "s0"
        assert (run / "model_e006.pt").is_file() and (run / "settings.json").is_file()
        metrics = pd.read_csv(run / "metrics.csv")
        traj = pd.read_parquet(run / "analysis" / "trajectory.parquet")
        assert traj["error"].isna().all()
        test = metrics[metrics.split == "test"]
        best = int(test[test.acc_adv == test.acc_adv.max()].epoch.max())
        assert sorted(traj["epoch"].unique()) == sorted({1, 3, 6, best})
        # weights-only checkpoints kept for exactly the analysed epochs; no resume state left behind
        assert sorted(int(p.stem[7:]) for p in run.glob("model_e*.pt")) == sorted({1, 3, 6, best})
        assert not (run / "resume.pt").exists()
        assert (run / "monitor" / "diagnosis.json").is_file()  # the monitor was closed when training ended
        assert set(traj["split"]) == {"train", "test"}


def test_findings_agree_with_metrics_and_direct_measurement(demo_dir):
    runs = pd.read_csv(demo_dir / "findings_runs.csv")
    assert sorted(runs["variant"]) == sorted(METHODS)
    x, y = load_dataset("digits", "test", n=20, seed=0)  # the --quick analysis subset
    for row in runs.to_dict("records"):
        run = demo_dir / row["variant"] / "s0"
        test = pd.read_csv(run / "metrics.csv").query("split == 'test'").sort_values("epoch")
        assert row["best"] == pytest.approx(100 * test["acc_adv"].max())
        assert row["last"] == pytest.approx(100 * test["acc_adv"].iloc[-1])
        assert row["gap"] == pytest.approx(row["best"] - row["last"]) and row["gap"] >= 0
        # mean test ‖∇ₓ CE‖₁ at the best epoch, recomputed directly from the checkpoint
        model = load_model(run / f"model_e{int(row['best_epoch']):03d}.pt", "mlp", hidden=(32,))
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
        assert row["grad_l1_best"] == pytest.approx(g.abs().flatten(1).sum(1).mean().item(), rel=1e-4)
    agg = pd.read_csv(demo_dir / "findings.csv")
    assert agg.set_index("variant").loc["pgd_at", "gap_mean"] == pytest.approx(
        runs.set_index("variant").loc["pgd_at", "gap"])
    md = (demo_dir / "findings.md").read_text()
    assert all(f"| {m} | 1 |" in md for m in METHODS)


def test_slices_at_best_and_last_epoch_match_direct_loss(demo_dir):
    from landscape.diagnose import diagnose

    x, y = load_dataset("digits", "test", n=4, seed=0)  # the --quick slice images
    for m in ("pgd_at", "at_advlc"):
        analysis = demo_dir / m / "s0" / "analysis"
        d = diagnose(pd.read_parquet(analysis / "trajectory.parquet"),
                     log=pd.read_csv(demo_dir / m / "s0" / "metrics.csv"))  # the one best epoch: the log's
        s1 = pd.read_parquet(analysis / "slices_1d.parquet")
        s2 = pd.read_parquet(analysis / "slices_2d.parquet")
        assert sorted(s1["epoch"].unique()) == sorted({d.best_epoch, d.last_epoch})
        assert set(s1["direction"].astype(str)) == {"adversarial", "random"}
        assert len(s2) == len(s2["epoch"].unique()) * 9 * 9  # one image, 9 x 9 plane
        for epoch in s1["epoch"].unique():
            model = load_model(demo_dir / m / "s0" / f"model_e{int(epoch):03d}.pt", "mlp", hidden=(32,))
            with torch.no_grad():
                direct = F.cross_entropy(model(x), y, reduction="none")
            centre = s1[(s1["epoch"] == epoch) & (s1["a"] == 0) & (s1["direction"] == "random")]
            assert centre.sort_values("sample")["loss"].tolist() == pytest.approx(direct.tolist(), rel=1e-5)
    assert not (demo_dir / "standard" / "s0" / "analysis" / "slices_1d.parquet").exists()
    html = (demo_dir / "report.html").read_text()
    assert "2D loss surface — pgd_at/s0" in html and "2D loss surface — at_advlc/s0" in html


def test_weight_space_slices_and_training_path_of_the_sliced_runs(demo_dir):
    """pgd_at and at_advlc (first seed): a 1D weight slice (clean and robust) at the best and the last epoch and
    the PCA path of the kept checkpoints with its clean-loss surface, on the analysis samples; the report draws
    both figures."""
    from landscape.diagnose import diagnose

    x, y = load_dataset("digits", "test", n=20, seed=0)  # the --quick analysis samples
    for m in ("pgd_at", "at_advlc"):
        run = demo_dir / m / "s0"
        analysis = run / "analysis"
        d = diagnose(pd.read_parquet(analysis / "trajectory.parquet"), log=pd.read_csv(run / "metrics.csv"))
        w1 = pd.read_parquet(analysis / "weight_slices_1d.parquet")
        assert sorted(w1["epoch"].unique()) == sorted({d.best_epoch, d.last_epoch})
        assert set(w1["kind"]) == {"clean", "robust"} and len(w1) == len(w1["epoch"].unique()) * 2 * 5
        for epoch in w1["epoch"].unique():  # alpha = 0 is the checkpoint itself
            model = load_model(run / f"model_e{int(epoch):03d}.pt", "mlp", hidden=(32,))
            with torch.no_grad():
                direct = F.cross_entropy(model(x), y).item()
            centre = w1[(w1["epoch"] == epoch) & (w1["alpha"] == 0) & (w1["kind"] == "clean")]
            assert centre["loss"].item() == pytest.approx(direct, rel=1e-5)
        kept = sorted(int(p.stem[7:]) for p in run.glob("model_e*.pt"))
        path = pd.read_parquet(analysis / "weight_path.parquet")
        assert path["epoch"].tolist() == kept
        surface = pd.read_parquet(analysis / "weight_path_surface.parquet")
        assert (surface["kind"] == "clean").sum() == 5 * 5 and surface.loc[surface["kind"] == "path", "epoch"].tolist() == kept
        assert (analysis / "weight_path_variance.parquet").is_file()
    assert not (demo_dir / "standard" / "s0" / "analysis" / "weight_slices_1d.parquet").exists()
    html = (demo_dir / "report.html").read_text()
    assert 'data-figure="weight_slices_1d"' in html and 'data-figure="weight_path"' in html


def test_demo_rerun_reuses_everything(demo_dir):
    """A second run finds every checkpoint and result on disk (resume), and changes no result."""
    before = pd.read_csv(demo_dir / "findings_runs.csv")
    mtime = (demo_dir / "pgd_at" / "s0" / "model_e006.pt").stat().st_mtime_ns
    threads = torch.get_num_threads()
    try:
        # serial this time (the first run used 2 processes); nothing is retrained
        assert experiments.main(["--quick", "--quiet", "--no-report", "--jobs", "1", "--out", str(demo_dir)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert (demo_dir / "pgd_at" / "s0" / "model_e006.pt").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(pd.read_csv(demo_dir / "findings_runs.csv"), before)


def test_demo_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["demo", "--epochs", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_claims_table_has_a_row_per_statement_with_its_evidence(demo_dir):
    claims = pd.read_csv(demo_dir / "claims.csv")
    assert list(claims.columns) == CLAIM_COLUMNS
    assert set(claims["holds"]) <= {"yes", "no", "inconclusive"}
    # the methods study's rows come from its committed results (docs/results/methods), named as the source
    study = claims["evidence"].str.startswith("methods study (docs/results/methods)")
    assert study.sum() == len(pd.read_csv("docs/results/methods/methods_claims.csv"))
    claims = claims[~study]
    assert [c.split(".")[0] for c in claims["claim"]] == ["1", "1", "1", "2", "2", "3", "x", "x", "4", "4"]
    assert (claims["holds"] == "inconclusive").all()  # one seed: no spread, no verdict
    runs = pd.read_csv(demo_dir / "findings_runs.csv").set_index("variant")
    at_vs_advlc = claims[claims["claim"] == "4. AdvLC mitigates RO"].iloc[0]
    assert at_vs_advlc["value"] == pytest.approx(runs.loc["pgd_at", "gap"] - runs.loc["at_advlc", "gap"], abs=1e-6)
    small = claims[claims["claim"].str.startswith("1. Standard training")].iloc[0]
    assert small["value"] == pytest.approx(runs.loc["standard", "gap_small"], abs=1e-6)
    assert "claims" in (demo_dir / "findings.md").read_text().lower()


def test_rho_curv_share_recomputed_from_the_trajectory(demo_dir):
    from scipy.stats import spearmanr

    runs = pd.read_csv(demo_dir / "findings_runs.csv").set_index("variant")
    traj = pd.read_parquet(demo_dir / "pgd_at" / "s0" / "analysis" / "trajectory.parquet")
    t = traj[traj.split == "test"].sort_values("epoch")
    t = t[t.epoch >= runs.loc["pgd_at", "best_epoch"]]
    if "fo_share_median" in t.columns:  # the per-sample measure, when landscape.measures has it
        share = t["fo_share_median"]
    else:
        share = 0.1 * t["grad_l1_mean"] / (t["loss_adv"] - t["loss_clean"])
    if len(t) >= 3:
        assert runs.loc["pgd_at", "rho_curv_share"] == pytest.approx(spearmanr(t["curv_adv_mean"], share)[0])
    else:
        assert pd.isna(runs.loc["pgd_at", "rho_curv_share"])


def test_weight_flatness_claim_recomputed_from_the_trajectory(demo_dir):
    runs = pd.read_csv(demo_dir / "findings_runs.csv").set_index("variant")
    traj = pd.read_parquet(demo_dir / "pgd_at" / "s0" / "analysis" / "trajectory.parquet")
    t = traj[traj.split == "test"].set_index("epoch")
    best, last = int(runs.loc["pgd_at", "best_epoch"]), int(t.index.max())
    rise = t.loc[last, "w_flat_avg_mean"] - t.loc[best, "w_flat_avg_mean"]
    assert runs.loc["pgd_at", "w_flat_avg_rise"] == pytest.approx(rise)
    claims = pd.read_csv(demo_dir / "claims.csv").set_index("claim")
    assert claims.filter(like="x. Cross-paper (Stutz", axis=0)["value"].iloc[0] == pytest.approx(rise, abs=1e-6)
    assert t["w_flat_avg_mean"].notna().all() and (t["w_flat_avg_q10"] == t["w_flat_avg_q90"]).all()  # per model


@pytest.mark.slow
def test_demo_runs_from_an_installed_wheel(tmp_path):
    """`landscape demo` from a wheel installed away from the source tree: nothing is loaded from analyses/."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1]
    tree = tmp_path / "src"
    shutil.copytree(src / "landscape", tree / "landscape", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copyfile(src / name, tree / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(tree)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("landscape-*.whl")
    target = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True)
    assert not (target / "analyses").exists()
    out = tmp_path / "run"
    code = ("import sys, landscape; from landscape.cli import main; assert landscape.__file__.startswith(sys.argv[1]); "
            "sys.exit(main(sys.argv[2:]))")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code, str(target), "demo", "--quick", "--quiet", "--no-report",
                           "--jobs", "1", "--epochs", "2", "--methods", "pgd_at", "at_advlc", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    claims = pd.read_csv(out / "claims.csv")
    assert list(claims.columns) == CLAIM_COLUMNS and len(claims) == 11  # 10 + "methods study not measured"
    assert claims["evidence"].iloc[-1].startswith("not measured: run `landscape demo --study methods`")
