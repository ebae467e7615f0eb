"""The run folder: one place for file names and table reading."""
import pandas as pd
import pytest

from landscape.runs import RUN_FILES, TABLES, load_tables, run_file


def test_run_file_names_and_unknown_key():
    assert run_file("trajectory") == "trajectory.parquet"
    assert run_file("claims") == "claims.csv"
    assert set(TABLES) <= set(RUN_FILES)
    with pytest.raises(ValueError, match="unknown run file 'nope'"):
        run_file("nope")


def test_load_tables_reads_analysis_subfolder_and_refuses_non_tables(tmp_path):
    (tmp_path / "analysis").mkdir()
    t = pd.DataFrame({"epoch": [1, 2], "split": "test", "acc_adv": [0.4, 0.5]})
    t.to_parquet(tmp_path / "analysis" / run_file("trajectory"))
    pd.testing.assert_frame_equal(load_tables([tmp_path]), t)
    with pytest.raises(ValueError, match="key must be one of"):
        load_tables([tmp_path], "claims")
