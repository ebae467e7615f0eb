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


# ------------------------------------------------------------------ Run: the one owner of a run folder

def _traj(best=4):
    acc = [0.30, 0.35, 0.40, 0.45, 0.44, 0.43, 0.42, 0.41, 0.40, 0.39]
    acc[best - 1] = 0.50
    return pd.DataFrame({"epoch": range(1, 11), "split": "test", "acc_adv": acc})


def _no_tmp(folder):
    return [p.name for p in folder.rglob("*.tmp")]


def test_run_writes_each_kind_atomically_and_reads_it_back(tmp_path):
    from landscape.runs import Run

    run = Run(tmp_path / "pgd_at")
    table = pd.DataFrame({"epoch": [1, 2], "split": ["test", "test"], "acc_adv": [0.4, 0.5]})
    table.attrs["markers"] = [{"epoch": 2}]  # attrs are not written into the table file
    assert run.write("trajectory", table) == tmp_path / "pgd_at" / "trajectory.parquet"
    run.write("metrics", table)
    run.write("settings", {"b": 1, "a": [1, 2]}, sort_keys=True)
    pd.testing.assert_frame_equal(run.read("trajectory"), table)
    pd.testing.assert_frame_equal(run.read("metrics"), table)
    assert run.read("settings") == {"a": [1, 2], "b": 1}
    assert (run.folder / "settings.json").read_text().startswith('{\n  "a"')
    assert run.name == "pgd_at" and set(run.files) == {"trajectory", "metrics", "settings"}
    assert _no_tmp(tmp_path) == []
    with pytest.raises(TypeError, match="DataFrame"):
        run.write("metrics", {"not": "a table"})
    with pytest.raises(FileNotFoundError, match="no claims.csv"):
        run.read("claims")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_tmp(tmp_path, monkeypatch):
    from landscape.runs import Run

    run = Run(tmp_path)
    run.write("metrics", _traj())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        run.write("metrics", _traj(best=7))
    monkeypatch.undo()
    assert run.read("metrics")["acc_adv"].idxmax() == 3  # the old file, whole
    assert _no_tmp(tmp_path) == []


def test_run_finds_files_in_the_folder_or_its_analysis_folder(tmp_path):
    from landscape.runs import Run

    run = Run(tmp_path)
    run.write("trajectory", _traj(best=4), analysis=True)
    assert run.find("trajectory") == tmp_path / "analysis" / "trajectory.parquet"
    assert run.trajectory().attrs["source"] == "trajectory.parquet"
    run.write("trajectory", _traj(best=7))  # the folder itself wins
    assert run.find("trajectory") == tmp_path / "trajectory.parquet"
    assert int(run.read("trajectory")["acc_adv"].idxmax()) == 6
    assert run.markers() == []
    run.write("settings", {"markers": [{"checkpoint": "model_best.pth", "epoch": 7}]}, analysis=True)
    assert run.markers() == [{"checkpoint": "model_best.pth", "epoch": 7}]
    assert Run(tmp_path / "analysis").name == tmp_path.name


def test_the_diagnosis_is_computed_once_with_the_training_log(tmp_path, monkeypatch):
    import importlib

    from landscape.diagnose import diagnosis_of

    diagnose_mod = importlib.import_module("landscape.diagnose")  # the module (the package exports the function)
    from landscape.runs import Run

    run = Run(tmp_path / "run")
    run.write("trajectory", _traj(best=4), analysis=True)
    run.write("metrics", _traj(best=7))  # the training log, beside the analysis folder: its best epoch wins
    calls = []
    real = diagnose_mod.diagnose

    def counting(table, **kwargs):
        calls.append(kwargs.get("log"))
        return real(table, **kwargs)

    monkeypatch.setattr(diagnose_mod, "diagnose", counting)
    first = diagnosis_of(run)
    assert diagnosis_of(run) is first and len(calls) == 1
    assert calls[0] is not None and first.best_epoch == 7 and first.best_source.startswith("training log")
    assert diagnosis_of(run, threshold=2.0).best_epoch == 7 and len(calls) == 2  # other settings: their own
    assert diagnosis_of(Run(tmp_path / "run" / "analysis")).best_epoch == 7  # from the analysis folder too
