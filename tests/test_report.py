"""The report: run discovery, the comparison first, every figure embedded, diagnosis numbers, skipped tables,
one context for HTML and Markdown, `landscape slice` output read with no renaming, and a real browser."""
from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from landscape import LandscapeError
from landscape.cli import main
from landscape.report import best_last_epochs, build_report, find_runs, load_findings, load_tables
from landscape.testing import write_synthetic_run, write_synthetic_study

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
COMPARISON = ["method_curves", "method_measures", "slices_1d_methods", "distributions_methods", "contours",
              "measure_vs_loss", "first_order_share", "weight_slices_1d", "weight_path"]
DETAIL = ["learning_curves", "training_curves", "measures", "slices_1d", "distributions", "surface_at_advlc",
          "surface_pgd_at"]
FULL_FIGURES = COMPARISON + DETAIL
#: Page height (CSS px at 1400 px wide) of the report of `study` before it was organised around the comparison
#: (every run drawn one by one, figures stretched to the page width), measured with chromium on this fixture.
OLD_HEIGHT = 17_317


def best_and_last_by_hand(folder: Path) -> tuple[int, float, int, float]:
    """Best/last epoch and robust test accuracy (%) read straight off the trajectory table."""
    t = pd.read_parquet(folder / "trajectory.parquet")
    test = t[t["split"] == "test"].sort_values("epoch")
    best = test.loc[test["acc_adv"].idxmax()]
    last = test.iloc[-1]
    return int(best["epoch"]), 100 * float(best["acc_adv"]), int(last["epoch"]), 100 * float(last["acc_adv"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """runs/demo with two synthetic runs: pgd_at (files in the run folder) and at_advlc (in analysis/)."""
    root = tmp_path_factory.mktemp("runs") / "demo"
    write_synthetic_run(root / "pgd_at", epochs=8, n=24, ro=1.0, seed=0)
    write_synthetic_run(root / "at_advlc" / "analysis", run="at_advlc", epochs=8, n=24, ro=0.2, seed=1)
    return root


@pytest.fixture(scope="module")
def report(demo) -> Path:
    return build_report(demo, dpi=80)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A folder laid out like `make demo`'s: 4 methods x 3 seeds (``pgd_at/s0`` ...), slices for the first seed
    of two methods, claims.csv and per-run final_eval.csv."""
    return write_synthetic_study(tmp_path_factory.mktemp("study") / "demo")


@pytest.fixture(scope="module")
def study_report(study) -> Path:
    return build_report(study, dpi=72)


def test_find_runs_in_run_folders_analysis_folders_and_two_levels_down(demo, tmp_path):
    runs = find_runs(demo)
    assert [r.name for r in runs] == ["at_advlc", "pgd_at"]
    assert runs[0].files["trajectory"] == demo / "at_advlc" / "analysis" / "trajectory.parquet"
    assert set(runs[1].files) == {"trajectory", "samples", "slices_1d", "slices_2d", "metrics", "settings",
                                  "weight_slices_1d", "weight_path_surface"}
    assert [r.name for r in find_runs(demo.parent)] == ["demo/at_advlc", "demo/pgd_at"]
    assert [r.name for r in find_runs(demo / "at_advlc")] == ["at_advlc"]
    assert [r.name for r in find_runs(demo / "at_advlc" / "analysis")] == ["at_advlc"]


def test_no_trajectory_is_a_landscape_error_naming_folder_and_file(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(LandscapeError, match=r"no trajectory\.parquet in .*empty"):
        build_report(tmp_path / "empty")
    with pytest.raises(LandscapeError, match="does not exist"):
        build_report(tmp_path / "nowhere")


def test_report_embeds_every_figure_and_requests_nothing_external(report):
    text = report.read_text()
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" data-figure="(\w+)"',
                          text)
    assert [key for _, key in embedded] == FULL_FIGURES
    for b64, _ in embedded:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    # self-contained: no URL outside data: and in-page anchors, no script or stylesheet loaded from elsewhere
    markup = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)  # plotly.js quotes URLs in its code
    assert not re.search(r"(src|href)=['\"](?!data:|#)", markup)
    assert "<link" not in text and not re.search(r"<script[^>]*\ssrc=", text)
    assert "Skipped" not in text
    # plotly.js inlined once, before the two interactive charts that use it
    from plotly.offline import get_plotlyjs

    library = get_plotlyjs()
    assert text.count(library[:500]) == 1 and text.count(library[-500:]) == 1
    assert text.index(library[:500]) < text.index('data-interactive="method_curves"')
    assert re.findall(r'data-interactive="(\w+)"', text) == ["method_curves", "method_measures"]


def test_comparison_opens_the_page_and_per_run_detail_is_collapsed(report):
    text = report.read_text()
    order = [text.index(marker) for marker in ('id="best-last-table"', 'id="fig-method_curves"',
                                               'id="detail-runs"')]
    assert order == sorted(order)
    detail = text[text.index('<details class="section" id="detail-runs">'):text.index('<h2 id="settings">')]
    assert 'id="diagnosis-table"' in detail
    assert re.findall(r'data-figure="(\w+)"', detail) == DETAIL
    assert 'id="claims"' not in text  # no claims.csv in this folder: no section


def test_best_last_table_per_method_is_mean_and_sd_over_seeds(study_report, study):
    text = study_report.read_text()
    table = re.search(r'<table id="best-last-table">(.*?)</table>', text, re.S).group(1)
    rows = {r[0]: r[1:] for r in (re.findall(r"<td[^>]*>([^<]*)</td>", row)
                                  for row in re.findall(r"<tr>(.*?)</tr>", table)) if r}
    assert sorted(rows) == ["at_advlc", "at_gradreg", "pgd_at", "standard"]
    by_hand = [best_and_last_by_hand(study / "pgd_at" / f"s{s}" / "analysis") for s in range(3)]
    gaps = np.array([b[1] - b[3] for b in by_hand])
    best = np.array([b[1] for b in by_hand])
    assert rows["pgd_at"][0] == "3"
    assert rows["pgd_at"][2] == f"{best.mean():.1f} ± {best.std(ddof=1):.1f}"
    assert rows["pgd_at"][5] == f"{gaps.mean():.1f} ± {gaps.std(ddof=1):.1f}"


def test_claims_and_final_evaluation_tables_come_first(study_report, study):
    text = study_report.read_text()
    assert text.index('id="claims-table"') < text.index('id="best-last-table"') < text.index('id="final-eval-table"')
    claims = re.search(r'<table id="claims-table" class="study">(.*?)</table>', text, re.S).group(1)
    assert re.findall(r"<th>([^<]*)</th>", claims) == ["claim", "evidence", "value", "holds"]
    assert claims.count('<td class="yes">yes</td>') == 3
    final = re.search(r'<table id="final-eval-table">(.*?)</table>', text, re.S).group(1)
    header = re.findall(r"<th>([^<]*)</th>", final)
    assert header[:3] == ["method", "which", "runs"] and "acc autoattack (%)" in header
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", final)[1:]]
    evals = pd.concat([pd.read_csv(study / "pgd_at" / f"s{s}" / "analysis" / "final_eval.csv") for s in range(3)])
    last = evals[evals["which"] == "last"]["acc_autoattack"] * 100
    row = next(r for r in rows if r[:2] == ["pgd_at", "last"])
    assert row[header.index("acc autoattack (%)")] == f"{last.mean():.1f} ± {last.std(ddof=1):.1f}"
    md = (study_report.parent / "report.md").read_text()
    assert md.index("## Claims") < md.index("## Best vs last") < md.index("## Final evaluation") < md.index("## Figures")


def test_report_shows_the_diagnosis_numbers_of_each_run(report, demo):
    text = report.read_text()
    table = re.search(r'<table id="diagnosis-table">(.*?)</table>', text, re.S).group(1)
    rows = dict(re.findall(r"<tr><td>(\w+)</td>(.*?)</tr>", table))
    assert list(rows) == ["at_advlc", "pgd_at"]
    for run, folder in (("pgd_at", demo / "pgd_at"), ("at_advlc", demo / "at_advlc" / "analysis")):
        best_epoch, best_acc, last_epoch, last_acc = best_and_last_by_hand(folder)
        cells = re.findall(r"<td>([^<]*)</td>", rows[run])
        assert cells[:5] == [str(best_epoch), f"{best_acc:.1f}", str(last_epoch), f"{last_acc:.1f}",
                             f"{best_acc - last_acc:.1f}"]


def test_report_markdown_links_figures_and_lists_settings_and_versions(report, demo):
    md = (report.parent / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\((figures/\w+\.png)\)", md)
    assert [Path(link).stem for link in links] == FULL_FIGURES
    assert all((report.parent / link).is_file() for link in links)
    assert '"synthetic": true' in md and "| torch |" in md and "| python |" in md
    assert "### pgd_at: settings.json" in md and "### at_advlc: analysis/settings.json" in md
    html = report.read_text()
    assert "<td>torch</td>" in html and "<td>platform</td>" in html


def test_missing_optional_tables_are_skipped_with_a_note(tmp_path, demo):
    run = tmp_path / "only_trajectory"
    run.mkdir()
    shutil.copy(demo / "pgd_at" / "trajectory.parquet", run / "trajectory.parquet")
    html = build_report(run, tmp_path / "out", dpi=72).read_text()
    assert re.findall(r'data-figure="(\w+)"', html) == ["method_curves", "method_measures", "measure_vs_loss",
                                                        "first_order_share", "learning_curves", "measures"]
    for why in ("no metrics.csv", "no slices_1d.parquet", "no slices_2d.parquet", "no samples.parquet",
                "no weight_slices_1d.parquet", "no weight_path_surface.parquet", "No settings.json"):
        assert why in html


def test_weight_space_figures_show_where_the_tables_are_and_are_skipped_otherwise(study, tmp_path):
    """The demo's sliced runs (first seed of pgd_at and at_advlc) carry the weight-space tables: the report draws
    the 1D weight slices (best vs last, one row per sliced run) and the PCA training paths (one panel each, the
    diagnosed best epoch marked); a study without them gets one note per figure and no error."""
    from landscape.report.data import load_runs
    from landscape.report.figures import figure_jobs

    data = load_runs(study)
    assert sorted(data.tables["weight_slices_1d"]["run"].unique()) == ["at_advlc/s0", "pgd_at/s0"]
    assert (data.tables["weight_path_surface"]["kind"] == "path").any()
    jobs = {key: (table, skipped) for key, _, table, skipped, _ in figure_jobs(data)}
    assert set(jobs["weight_slices_1d"][0]["label"]) == {"best", "last"}  # labelled from the diagnoses
    html = build_report(study, tmp_path / "with", dpi=72, interactive=False).read_text()
    figs = re.findall(r'data-figure="(\w+)"', html)
    assert figs.index("first_order_share") < figs.index("weight_slices_1d") < figs.index("weight_path")
    assert "no weight_slices_1d" not in html and "no weight_path_surface" not in html
    png = tmp_path / "with" / "figures"
    assert (png / "weight_slices_1d.png").stat().st_size > 10_000 and (png / "weight_path.png").stat().st_size > 10_000

    bare = tmp_path / "bare"
    shutil.copytree(study, bare)
    for f in [*bare.rglob("weight_slices_1d.parquet"), *bare.rglob("weight_path_surface.parquet")]:
        f.unlink()
    html = build_report(bare, tmp_path / "without", dpi=72, interactive=False).read_text()
    figs = re.findall(r'data-figure="(\w+)"', html)
    assert "weight_slices_1d" not in figs and "weight_path" not in figs and "method_curves" in figs
    assert "no weight_slices_1d.parquet in any run" in html and "no weight_path_surface.parquet in any run" in html


def test_unusable_trajectory_falls_back_to_diagnosis_json(tmp_path, demo):
    """diagnose() refuses accuracies in percent; the run's own diagnosis.json is shown instead, with a note."""
    run = tmp_path / "percent"
    run.mkdir()
    t = pd.read_parquet(demo / "pgd_at" / "trajectory.parquet")
    t[["acc_clean", "acc_adv"]] *= 100
    t.to_parquet(run / "trajectory.parquet")
    (run / "diagnosis.json").write_text(json.dumps({"best_epoch": 4, "best_acc_adv": 0.4321, "last_epoch": 8,
                                                    "last_acc_adv": 0.3, "gap": 13.21, "correlations": []}))
    html = build_report(run, tmp_path / "out", dpi=72).read_text()
    assert "<td>4</td><td>43.2</td><td>8</td><td>30.0</td><td>13.2</td>" in html
    assert "diagnosis read from diagnosis.json" in html


def test_load_tables_names_runs_by_folder():
    with pytest.raises(FileNotFoundError, match="no such"):
        load_tables(["/nonexistent/x.parquet"])
    with pytest.raises(ValueError, match="key"):
        load_tables(["x"], key="settings")


def test_load_tables_combines_run_directories(demo):
    t = load_tables([demo / "pgd_at", demo / "at_advlc"], "slices_2d")
    assert list(pd.unique(t["run"])) == ["pgd_at", "at_advlc"]
    one = pd.read_parquet(demo / "pgd_at" / "slices_2d.parquet")
    np.testing.assert_allclose(t[t.run == "pgd_at"]["loss"].to_numpy(), one["loss"].to_numpy())


def test_cli_report(tmp_path, demo, capsys):
    (tmp_path / "run").mkdir()
    shutil.copy(demo / "pgd_at" / "trajectory.parquet", tmp_path / "run" / "trajectory.parquet")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r"), "--quiet", "--dpi", "72"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"landscape report: wrote 2 file(s) to {tmp_path / 'r'}"
    assert out[1:3] == [f"  {tmp_path / 'r' / 'report.html'}", f"  {tmp_path / 'r' / 'report.md'}"]
    assert out[3] == f"landscape report: 6 figure(s) in {tmp_path / 'r' / 'figures'}"
    assert main(["report", str(tmp_path / "r"), "--quiet"]) == 2
    assert "trajectory.parquet" in capsys.readouterr().err


def test_report_in_a_real_browser(study_report, tmp_path):
    """Chromium: no console errors, nothing requested from outside, every image decodes, the claims and
    best/last tables are the first things on the page, the page is at most half as tall as before, hovering a
    curve shows run, epoch and value; a screenshot is saved."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium not found at {CHROMIUM} (Debian package 'chromium'; `make browser` installs it)")
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(study_report.resolve().as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            height = page.evaluate("document.documentElement.scrollHeight")
            tables = page.eval_on_selector_all("table", "els => els.map(e => [e.id, e.getBoundingClientRect().top])")
            first_figure = page.eval_on_selector("figure", "e => e.getBoundingClientRect().top")
            charts = page.eval_on_selector_all(".plot .main-svg", "els => els.length")
            hover = page.evaluate("""() => {
                const div = document.getElementById('plot-method_curves');
                const i = div.data.findIndex(t => t.name === 'pgd_at/s1');
                Plotly.Fx.hover(div, [{curveNumber: i, pointNumber: 4}]);
                return div.querySelector('.hovertext') ? div.querySelector('.hovertext').textContent : '';
            }""")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert len(widths) == len(re.findall(r"<img ", study_report.read_text())) > 10 and all(w > 0 for w in widths)
    assert [t[0] for t in tables[:3]] == ["claims-table", "best-last-table", "final-eval-table"]
    assert tables[1][1] < first_figure
    assert charts >= 2
    assert "pgd_at/s1" in hover and "epoch 5" in hover and "robust accuracy" in hover
    assert height <= OLD_HEIGHT / 2, f"report is {height} px tall (before: {OLD_HEIGHT} px)"
    assert shot.stat().st_size > 10_000


def test_findings_csv_and_images_open_the_report(tmp_path, demo):
    """RUN_DIR/findings.csv becomes a "Findings" table above the diagnosis (mean/std pairs as mean ± sd),
    and findings.png / figures/findings_*.png are embedded (HTML) and linked (Markdown) in that section."""
    study = tmp_path / "study"
    (study / "pgd_at" / "s0").mkdir(parents=True)
    shutil.copy(demo / "pgd_at" / "trajectory.parquet", study / "pgd_at" / "s0" / "trajectory.parquet")
    pd.DataFrame({"method": ["standard", "pgd_at"], "seeds": [3, 3],
                  "best_mean": [49.70238, 74.21875], "best_std": [4.49395, 0.11161],
                  "gap_mean": [42.29911, 0.47159], "gap_std": [5.71599, 0.00531],
                  "note": ["no AT", "AT"]}).to_csv(study / "findings.csv", index=False)
    (study / "figures").mkdir()
    png = {}
    for i, path in enumerate([study / "figures" / "findings_measures.png", study / "findings.png"]):
        fig = Figure(figsize=(2 + i, 2))
        fig.add_subplot().plot([0, 1], [i, 1 - i])
        fig.savefig(path, dpi=50)
        png[path.stem] = path.read_bytes()

    html_path = build_report(study, tmp_path / "out", dpi=72)
    text = html_path.read_text()
    assert text.index('<h2 id="findings">Findings</h2>') < text.index('<h2 id="figures">')
    assert text.index('id="best-last-table"') < text.index('<h2 id="findings">')
    assert '<a href="#findings">Findings</a>' in text
    table = re.search(r'<table id="findings-table" class="study">(.*?)</table>', text, re.S).group(1)
    assert re.findall(r"<th>([^<]*)</th>", table) == ["method", "seeds", "best", "gap", "note"]
    css = re.search(r"<style>(.*?)</style>", text, re.S).group(1)  # a wide findings table wraps, never cut off
    assert "#findings-table th{white-space:normal" in css and "#findings-table td{white-space:normal" in css
    rows = [re.findall(r"<td>([^<]*)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", table)[1:]]
    # decimals per column: three significant digits of its smallest value (49.7 -> 1, 0.472 -> 3)
    assert rows == [["standard", "3", "49.7 ± 4.5", "42.299 ± 5.716", "no AT"],
                    ["pgd_at", "3", "74.2 ± 0.1", "0.472 ± 0.005", "AT"]]
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" '
                          r'data-findings="(\w+)"', text)
    assert [key for _, key in embedded] == ["findings", "findings_measures"]  # sorted by name
    for b64, key in embedded:
        assert base64.b64decode(b64) == png[key]
    assert text.index('data-findings="findings_measures"') < text.index('<h2 id="figures">')

    md = (html_path.parent / "report.md").read_text()
    assert md.index("## Findings") < md.index("## Figures") < md.index("### Diagnosis per run")
    assert "| pgd_at | 3 | 74.2 ± 0.1 | 0.472 ± 0.005 | AT |" in md
    links = re.findall(r"!\[[^\]]*\]\((figures/findings\w*\.png)\)", md)
    assert links == ["figures/findings.png", "figures/findings_measures.png"]
    assert all((html_path.parent / link).read_bytes() == png[Path(link).stem] for link in links)

    # report written into RUN_DIR itself, as the digits demo does: its figures/ already holds the image
    again = build_report(study, study, dpi=72).read_text()
    assert again.count('data-findings="findings_measures"') == 1
    assert (study / "figures" / "findings_measures.png").read_bytes() == png["findings_measures"]


def test_no_findings_no_section_and_a_bad_findings_csv_is_a_note(tmp_path, report):
    assert 'id="findings"' not in report.read_text()
    assert "## Findings" not in (report.parent / "report.md").read_text()
    (tmp_path / "findings.csv").write_text("")
    found = load_findings(tmp_path)
    assert found.rows == [] and "findings.csv" in found.note and not found.images
    assert bool(found)  # the section still appears, with the note


def test_runs_with_the_same_folder_name_keep_one_name_across_tables(tmp_path):
    a = write_synthetic_run(tmp_path / "pgd_at" / "s0", ro=1.0, seed=0)
    b = write_synthetic_run(tmp_path / "at_advlc" / "s0", ro=0.2, seed=1)
    traj = load_tables([a, b], "trajectory")
    slices = load_tables([a, b], "slices_1d")
    assert sorted(traj["run"].unique()) == sorted(slices["run"].unique()) == sorted([str(a), str(b)])
    assert set(best_last_epochs(traj)) == {str(a), str(b)}


def test_slice_output_of_a_users_run_reaches_the_report_with_no_renaming(tmp_path, capsys):
    """`landscape trajectory` then `landscape slice` of two of its checkpoints into the same folder: the report
    draws the slices, best vs last, from the files exactly as the commands wrote them."""
    import torch

    from landscape.checkpoints import save_checkpoint
    from landscape.models import create_model
    from landscape.runs import run_file

    run = tmp_path / "my_run"
    run.mkdir()
    for epoch in (1, 2, 3):
        torch.manual_seed(epoch)
        save_checkpoint(run / f"epoch_{epoch:03d}.pt", create_model("mlp", hidden=(16,)), epoch=epoch)
    mlp = ["--arch", "mlp", "--arch-arg", "hidden=(16,)", "--n", "24", "--steps", "2", "--quiet"]
    assert main(["trajectory", str(run), *mlp, "--measures", "grad", "--out", str(run / "analysis")]) in (0, 1)
    traj = pd.read_parquet(run / "analysis" / run_file("trajectory"))
    test = traj[traj["split"] == "test"].sort_values("epoch")
    best = int(test.loc[test["acc_adv"].idxmax(), "epoch"])
    capsys.readouterr()
    for epoch in sorted({best, 3}):
        assert main(["slice", str(run / f"epoch_{epoch:03d}.pt"), *mlp, "--index", "0..2", "--grid", "5",
                     "--dirs", "adversarial", "random", "--kind", "1d", "--out", str(run / "analysis")]) == 0
    out = capsys.readouterr().out
    assert f"  {run / 'analysis' / run_file('slices_1d')}  (" in out and "landscape slice: wrote 2 file(s)" in out
    slices = pd.read_parquet(run / "analysis" / run_file("slices_1d"))
    assert sorted(slices["epoch"].unique()) == sorted({best, 3})  # the second call kept the first one's rows
    assert len(slices) == len({best, 3}) * 2 * 3 * 5

    html = build_report(run, tmp_path / "report", dpi=72, interactive=False).read_text()
    assert 'data-figure="slices_1d_methods"' in html and 'data-figure="slices_1d"' in html
    assert "no slices_2d.parquet in any run" in html and "Skipped: no slices_1d" not in html


def test_templates_ship_as_package_data():
    """The report renders from an installed wheel: pyproject's package-data covers every template file."""
    import fnmatch
    import tomllib
    from importlib import resources

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = patterns["landscape.report"]
    templates = resources.files("landscape.report") / "templates"
    names = sorted(p.name for p in templates.iterdir() if p.is_file())
    assert {"report.html.j2", "report.md.j2", "report.css"} <= set(names)
    assert all(any(fnmatch.fnmatch(f"templates/{n}", pat) for pat in shipped) for n in names)


def test_html_and_markdown_come_from_one_context(study_report):
    """Both pages list the same figures in the same order and the same table cells."""
    html = study_report.read_text()
    md = (study_report.parent / "report.md").read_text()
    html_figures = re.findall(r'data-figure="(\w+)"', html)
    md_figures = [Path(p).stem for p in re.findall(r"!\[[^\]]*\]\(figures/(\w+\.png)\)", md)]
    assert md_figures == html_figures
    cells = re.findall(r"<td[^>]*>([^<]*)</td>",
                       re.search(r'<table id="best-last-table">(.*?)</table>', html, re.S).group(1))
    assert "| " + " | ".join(cells[:7]) + " |" in md


def test_progress_bars_stay_out_of_logs_that_are_not_a_terminal(capsys, monkeypatch):
    """Every bar of the package comes from landscape._progress: off when stderr is no terminal (a log file), on
    when LANDSCAPE_PROGRESS=1 asks for it, off whenever the caller disables it."""
    import landscape
    from landscape import _progress

    monkeypatch.delenv("LANDSCAPE_PROGRESS", raising=False)
    for _ in _progress.bar(range(3), desc="quiet-bar"):
        pass
    assert "quiet-bar" not in capsys.readouterr().err  # captured stderr is not a TTY
    monkeypatch.setenv("LANDSCAPE_PROGRESS", "1")
    for _ in _progress.bar(range(3), desc="forced-bar"):
        pass
    assert "forced-bar" in capsys.readouterr().err
    assert not _progress.wanted(disable=True)
    monkeypatch.delenv("LANDSCAPE_PROGRESS")
    monkeypatch.setattr("sys.stderr", type("Tty", (), {"isatty": lambda self: True, "write": print})())
    assert _progress.wanted()
    package = Path(landscape.__file__).parent
    direct = [str(p.relative_to(package)) for p in package.rglob("*.py")
              if p.name != "_progress.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert direct == [], f"use landscape._progress (quiet off a terminal) instead of tqdm in {direct}"


def test_tracking_section_ranks_the_measures_of_the_overfitting_runs(study_report, study):
    from landscape.diagnose import run_diagnoses
    from landscape.ranking import rank_measures

    html = study_report.read_text()
    assert 'id="tracking"' in html and 'id="ranking-table"' in html
    section = html.split('id="ranking-table"')[1].split("</table>")[0]
    runs = sorted(p.parent for p in study.rglob("trajectory.parquet"))
    expected = rank_measures(run_diagnoses(runs))
    assert len(expected) and not expected["measure"].str.startswith("w_").all()
    cells = re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>")[1])
    assert len(cells) == len(expected)
    for row, (_, rec) in zip(cells, expected.iterrows()):
        values = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert values[1] == rec["measure"] and values[0] == str(rec["rank"])
        assert values[5].startswith(f"{rec['spearman_mean']:.2f}")
