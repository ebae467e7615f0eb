"""Generated result blocks: the committed README/findings numbers equal what the committed CSVs render."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from landscape.study.docblocks import DOCUMENTS, RESULTS_DIR, publish, render_blocks, replace_blocks, stale_files

ROOT = Path(__file__).resolve().parents[1]


def test_committed_tables_equal_what_the_committed_csvs_produce():
    assert (ROOT / RESULTS_DIR / "claims.csv").is_file()
    assert stale_files(ROOT) == []
    blocks = render_blocks(ROOT / RESULTS_DIR)
    for doc in DOCUMENTS:
        text = (ROOT / doc).read_text()
        assert "<!-- BEGIN generated:provenance -->" in text  # machine, date and versions beside the numbers
    readme = (ROOT / "README.md").read_text()
    assert blocks["claims"] in readme and blocks["summary"] in readme


def test_claims_block_shows_every_row_of_claims_csv():
    claims = pd.read_csv(ROOT / RESULTS_DIR / "claims.csv")
    block = render_blocks(ROOT / RESULTS_DIR)["claims"]
    assert len(block.strip().splitlines()) == 2 + len(claims)
    for r in claims.to_dict("records"):
        assert r["claim"] in block and f"**{r['holds']}**" in block


def test_replace_blocks_is_idempotent_and_refuses_unknown_names():
    text = "a\n<!-- BEGIN generated:x -->\nold\n<!-- END generated:x -->\nb\n"
    once = replace_blocks(text, {"x": "new\n"})
    assert once == "a\n<!-- BEGIN generated:x -->\nnew\n<!-- END generated:x -->\nb\n"
    assert replace_blocks(once, {"x": "new\n"}) == once
    with pytest.raises(ValueError, match="unknown generated block 'x'"):
        replace_blocks(text, {"y": ""})


def test_publish_copies_a_run_and_rewrites_the_blocks(tmp_path):
    root = tmp_path / "repo"
    for doc in DOCUMENTS:
        (root / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / doc, root / doc)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("claims.csv", "findings.csv", "findings_runs.csv"):
        shutil.copyfile(ROOT / RESULTS_DIR / name, run / name)
    claims = pd.read_csv(run / "claims.csv")
    claims.loc[0, "value"] = 123.456
    claims.to_csv(run / "claims.csv", index=False)
    meta = json.loads((ROOT / RESULTS_DIR / "provenance.json").read_text())
    (run / "study.json").write_text(json.dumps(dict(meta, timings=[])))
    changed = publish(run, root)
    assert set(changed) == {root / doc for doc in DOCUMENTS}
    assert "123.46" in (root / "README.md").read_text()
    assert stale_files(root) == [] and publish(run, root) == []  # idempotent
    with pytest.raises(FileNotFoundError, match="study.json"):
        publish(tmp_path, root)


def test_evaluation_doc_masking_tables_equal_what_the_committed_csv_produces():
    """docs/evaluation.md's flag tables are rendered by benchmarks/bench_masking.py from its committed CSV."""
    import importlib
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        bench = importlib.import_module("bench_masking")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    csv = ROOT / "benchmarks" / "results" / "masking_cpu.csv"
    assert csv.is_file()
    assert bench.stale_blocks(ROOT / "docs" / "evaluation.md", [csv]) == []
    df = pd.read_csv(csv)
    assert set(df["table"]) == {"masked", "at"} and df["torch"].notna().all() and df["commit"].notna().all()
