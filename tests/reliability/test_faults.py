"""Faults during a trajectory run: SIGKILL midway, a full disk, a checkpoint still being written.

The promise: finished work is never lost (each checkpoint's result is an atomic file that a re-run reuses), no
partial file survives, a failing checkpoint is recorded in the ``error`` column while the others finish, and a
re-run produces exactly the table of an uninterrupted run.
"""
from __future__ import annotations

import errno
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from landscape import create_model
from landscape.checkpoints import save_checkpoint

ARCH_KW = {"hidden": (16,)}
N_CKPT = 6
# what every run here measures: tiny, but each checkpoint still takes a noticeable fraction of a second
SETTINGS = dict(n=30, steps=2, measures=["grad", "curv_adv"], splits=["test"], seed=0)
CLI_SETTINGS = ["--n", "30", "--steps", "2", "--measures", "grad,curv_adv", "--splits", "test", "--seed", "0"]


def _run_dir(root: Path) -> Path:
    """Six checkpoints of a drifting tiny MLP in the official AdvLC format, ``e1.pt`` .. ``e6.pt``."""
    ckpts = root / "ckpts"
    ckpts.mkdir(parents=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("mlp", **ARCH_KW)
        for epoch in range(1, N_CKPT + 1):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.1 * torch.randn_like(p))
            save_checkpoint(ckpts / f"e{epoch}.pt", model, epoch=epoch)
    return ckpts


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> Path:
    return _run_dir(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def reference(ckpts, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An uninterrupted run (in-process): (trajectory table, per-sample rows) as read back from disk."""
    from landscape.trajectory import analyse_trajectory

    out = tmp_path_factory.mktemp("reference")
    table = analyse_trajectory(ckpts, "mlp", out_dir=out, arch_kwargs=ARCH_KW, progress=False, **SETTINGS)
    assert table.attrs["failed"] == 0 and table.attrs["computed"] == N_CKPT
    return pd.read_parquet(out / "trajectory.parquet"), pd.read_parquet(out / "samples.parquet")


def _leftovers(out: Path) -> list[Path]:
    """Temporary or partial files anywhere under ``out``."""
    return [p for p in out.rglob("*") if p.is_file() and (p.name.endswith((".tmp", ".part", ".partial"))
                                                            or p.name.startswith(".") and "tmp" in p.name)]


def _assert_same_tables(out: Path, reference) -> None:
    table_ref, samples_ref = reference
    pd.testing.assert_frame_equal(pd.read_parquet(out / "trajectory.parquet"), table_ref)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "samples.parquet"), samples_ref)


def _cli(ckpts: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "landscape.cli", "trajectory", str(ckpts), "--arch", "mlp", "--arch-arg",
            "hidden=(16,)", *CLI_SETTINGS, "--out", str(out), "--quiet"]


# ------------------------------------------------------------------------------------------------ SIGKILL


def test_sigkill_midway_then_rerun_equals_uninterrupted_run(ckpts, reference, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(ckpts, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results"
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if results.is_dir() and any(results.glob("*.parquet")):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself before it could be killed:\n{proc.stderr.read()}"
    proc.stdout.close()
    proc.stderr.close()
    finished = sorted(p.name for p in results.glob("*.parquet"))
    assert 1 <= len(finished) < N_CKPT  # killed midway: some checkpoints done, not all
    assert not (out / "trajectory.parquet").exists()

    rerun = subprocess.run(_cli(ckpts, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    match = re.search(r"\((\d+) computed, (\d+) reused\)", rerun.stdout)
    assert match, rerun.stdout
    computed, reused = int(match.group(1)), int(match.group(2))
    assert reused == len(finished) and computed == N_CKPT - len(finished)  # finished work was kept
    assert sorted(p.name for p in results.glob("*.parquet")) == [f"e{i}.parquet" for i in range(1, N_CKPT + 1)]
    assert _leftovers(out) == []
    _assert_same_tables(out, reference)


# ------------------------------------------------------------------------------------------------ disk full


def test_disk_full_on_one_checkpoint_is_recorded_and_the_rest_finish(ckpts, reference, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from landscape import trajectory

    real_write_table = pq.write_table

    def write_table(table, where, *args, **kwargs):
        if Path(where).name.startswith(".e3.parquet."):  # the temporary file of e3's result
            Path(where).write_bytes(b"PAR1 half a file")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real_write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)
    out = tmp_path / "full"
    table = trajectory.analyse_trajectory(ckpts, "mlp", out_dir=out, arch_kwargs=ARCH_KW, progress=False, **SETTINGS)

    bad = table[table["checkpoint"].str.endswith("e3.pt")]
    good = table[~table["checkpoint"].str.endswith("e3.pt")]
    assert len(bad) == 1 and "No space left on device" in bad["error"].iloc[0]
    assert good["error"].isna().all() and len(good) == N_CKPT - 1
    assert table.attrs["failed"] == 1
    assert not (out / "results" / "e3.parquet").exists()
    assert _leftovers(out) == []
    # the other checkpoints' numbers are those of the clean run
    ref = reference[0]
    pd.testing.assert_frame_equal(good.drop(columns="error").reset_index(drop=True),
                                  ref[~ref["checkpoint"].str.endswith("e3.pt")].drop(columns="error")
                                  .reset_index(drop=True), check_dtype=False)

    monkeypatch.undo()  # space freed: a re-run computes only the missing checkpoint
    again = trajectory.analyse_trajectory(ckpts, "mlp", out_dir=out, arch_kwargs=ARCH_KW, progress=False, **SETTINGS)
    assert again.attrs["computed"] == 1 and again.attrs["reused"] == N_CKPT - 1
    _assert_same_tables(out, reference)


# ------------------------------------------------------------------------------------------------ still being written


def _copy_run(ckpts: Path, dest: Path) -> Path:
    dest.mkdir()
    for p in ckpts.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


def test_truncated_checkpoint_is_recorded_not_fatal_and_recomputed_once_complete(ckpts, reference, tmp_path):
    from landscape.trajectory import analyse_trajectory

    run = _copy_run(ckpts, tmp_path / "ckpts")  # same names, so the tables compare equal after the copy
    full = (run / "e4.pt").read_bytes()
    (run / "e4.pt").write_bytes(full[: len(full) // 2])  # a writer that has not finished (and does not)
    out = tmp_path / "out"
    table = analyse_trajectory(run, "mlp", out_dir=out, arch_kwargs=ARCH_KW, progress=False, retry_delay=0.01,
                               **SETTINGS)
    errors = table.set_index(table["checkpoint"].map(lambda p: Path(p).name))["error"]
    assert errors.drop("e4.pt").isna().all()
    assert "e4.pt" in errors["e4.pt"] and re.search("truncated|corrupt", errors["e4.pt"])
    assert not (out / "results" / "e4.pt.parquet").exists() and not (out / "results" / "e4.parquet").exists()
    assert _leftovers(out) == []

    (run / "e4.pt").write_bytes(full)  # the writer finished
    again = analyse_trajectory(run, "mlp", out_dir=out, arch_kwargs=ARCH_KW, progress=False, **SETTINGS)
    assert again.attrs["computed"] == 1 and again.attrs["reused"] == N_CKPT - 1
    table_ref, samples_ref = reference
    got = pd.read_parquet(out / "trajectory.parquet")
    pd.testing.assert_frame_equal(got.drop(columns=["checkpoint", "run"]),
                                  table_ref.drop(columns=["checkpoint", "run"]))


def test_checkpoint_completed_during_the_first_read_is_retried(ckpts, reference, tmp_path, monkeypatch):
    """The file is truncated when discovered and its writer finishes while the first read fails: the run
    notices the file changed, retries once and gets the right numbers (no error recorded)."""
    from landscape import checkpoints
    from landscape.trajectory import analyse_trajectory

    run = _copy_run(ckpts, tmp_path / "ckpts")
    full = (run / "e2.pt").read_bytes()
    (run / "e2.pt").write_bytes(full[: len(full) // 3])
    real_load = checkpoints.load_checkpoint
    outcomes: list[str] = []  # what each read of e2.pt gave
    finished: list[bool] = []

    def load_while_writing(path, *args, **kwargs):
        if Path(path).name != "e2.pt":
            return real_load(path, *args, **kwargs)
        try:
            ckpt = real_load(path, *args, **kwargs)
        except checkpoints.CheckpointError:
            outcomes.append("truncated")
            raise
        finally:
            if not finished:
                (run / "e2.pt").write_bytes(full)  # the writer finishes meanwhile
                finished.append(True)
        outcomes.append("ok")
        return ckpt

    monkeypatch.setattr(checkpoints, "load_checkpoint", load_while_writing)
    out = tmp_path / "out"
    table = analyse_trajectory(run, "mlp", out_dir=out, arch_kwargs=ARCH_KW, progress=False, retry_delay=0.01,
                               **SETTINGS)
    assert outcomes[0] == "truncated" and outcomes[1:] and set(outcomes[1:]) == {"ok"}  # failed once, then retried
    assert table["error"].isna().all(), table["error"].tolist()
    table_ref, _ = reference
    pd.testing.assert_frame_equal(table.drop(columns=["checkpoint", "run"]).reset_index(drop=True),
                                  table_ref.drop(columns=["checkpoint", "run"]), check_dtype=False)
    assert _leftovers(out) == []
