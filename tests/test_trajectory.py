"""trajectory: discovery, epoch parsing, fingerprints, atomic results, resume, failures, executors."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from landscape import LandscapeError, create_model
from landscape.cli import main
from landscape import trajectory
from landscape.datasets import load_dataset
from landscape.diagnose import best_last_epochs
from landscape.trajectory import store, worker
from landscape.trajectory.discover import promote_lone_markers
from landscape.trajectory import (
    TrajectoryWarning,
    analyse_trajectory,
    checkpoint_stem,
    discover_checkpoints,
    file_fingerprint,
    parse_epoch,
    read_result,
    summarise_samples,
)

HIDDEN = (16,)
# tiny and fast: 24 samples per split, 2 PGD steps, gradient norms only
KW = {"arch_kwargs": {"hidden": HIDDEN}, "n": 24, "steps": 2, "eps": 0.1, "measures": ["grad"], "batch_size": 64,
      "progress": False, "retry_delay": 0.01}


def save_ckpt(path: Path, epoch: int | None, *, seed: int | None = None, hidden=HIDDEN) -> Path:
    """A random-init mlp saved as the official AdvLC checkpoint dict (no training)."""
    torch.manual_seed(seed if seed is not None else (epoch or 0))
    model = create_model("mlp", hidden=hidden)
    state = {"state_dict": model.state_dict(), "best_acc1": 0.0, "best_pgd": 0.0, "best_fgsm": 0.0,
             "optimizer": {}}
    if epoch is not None:
        state["epoch"] = epoch
    torch.save(state, path)
    return path


def make_run(root: Path, epochs=(1, 2, 3), name="run") -> Path:
    d = root / name
    d.mkdir()
    for e in epochs:
        save_ckpt(d / f"e{e}.pt", e)
    return d


def tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------- epoch parsing

@pytest.mark.parametrize("name, epoch", [
    ("e12.pt", 12), ("epoch_12.pth", 12), ("epoch12.pt", 12), ("model_12.pt", 12), ("model_e001.pt", 1),
    ("ep-3.pt", 3), ("12.pt", 12), ("checkpoint-epoch=05.ckpt", 5), ("EPOCH_7.PT", 7), ("model_ep10.pt", 10),
    ("wrn34_e5_final.pt", 5), ("seed1_epoch3.pt", 3), ("model_epoch_100.pth.tar", 100),
    ("runs/x/e4.pt", 4), ("run2_12.pth", 12),
    ("abc_end.pth.tar", None), ("abc_acc.pth.tar", None), ("abc_pgd.pth.tar", None),
    ("resnet18.pt", None), ("resnet18_best.pt", None), ("e.pt", None), ("best.pth", None),
])
def test_parse_epoch(name, epoch):
    assert parse_epoch(name) == epoch


@pytest.mark.parametrize("name, stem", [("a_end.pth.tar", "a_end"), ("e3.pt", "e3"), ("m.safetensors", "m"),
                                        ("x.y.pth", "x.y"), ("weird.xyz", "weird")])
def test_checkpoint_stem(name, stem):
    assert checkpoint_stem(name) == stem


# ------------------------------------------------------------------------------------------- discovery

def test_discover_directory_natural_order_and_skips(tmp_path):
    for name in ["e10.pt", "e2.pt", "e1.pth", "notes.json", "metrics.csv", "fig.png", "t.parquet"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e5.pt").write_bytes(b"x")  # not recursive
    d = discover_checkpoints(tmp_path)
    assert [p.name for p in d.paths] == ["e1.pth", "e2.pt", "e10.pt"]
    assert [e.name_epoch for e in d.entries] == [1, 2, 10]
    assert [e.position for e in d.entries] == [1, 2, 3]
    assert sorted(Path(s).name for s in d.skipped) == ["fig.png", "metrics.csv", "notes.json", "t.parquet"]
    assert d.unparsed == []


def test_discover_glob_list_and_unparsed(tmp_path):
    for name in ["a_end.pth.tar", "a_pgd.pth.tar", "e3.pt", "log.txt"]:
        (tmp_path / name).write_bytes(b"x")
    g = discover_checkpoints(str(tmp_path / "a_*"))
    assert [p.name for p in g.paths] == ["a_end.pth.tar"]  # the AdvLC repo's _pgd is a copy of a best epoch
    assert {Path(p).name: k for p, k in g.markers.items()} == {"a_pgd.pth.tar": "pgd"}
    assert len(g.unparsed) == 1
    lone = promote_lone_markers(g, {"a_end.pth.tar": 30, "a_pgd.pth.tar": 28}.get)  # keyed by Path.name below
    assert lone.markers == g.markers  # the lookup is by path: unknown epochs keep the marker
    lone = promote_lone_markers(g, lambda p: {"a_end.pth.tar": 30, "a_pgd.pth.tar": 28}[Path(p).name])
    assert [p.name for p in lone.paths] == ["a_end.pth.tar", "a_pgd.pth.tar"] and not lone.markers
    assert [e.position for e in lone.entries] == [1, 2]
    same = promote_lone_markers(g, lambda p: 30)  # a copy of a measured epoch stays a marker
    assert same.markers == g.markers and len(same.entries) == 1
    lst = discover_checkpoints([tmp_path / "e3.pt", tmp_path / "log.txt"])
    assert [p.name for p in lst.paths] == ["e3.pt"] and [Path(s).name for s in lst.skipped] == ["log.txt"]


def test_discover_unique_keys_for_same_stem(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    for p in [tmp_path / "a" / "e1.pt", tmp_path / "b" / "e1.pt", tmp_path / "a" / "e1.pth"]:
        p.write_bytes(b"x")
    keys = [e.key for e in discover_checkpoints(str(tmp_path / "*" / "e1.*")).entries]
    assert len(set(keys)) == 3 and all(k.startswith("e1-") for k in keys)


def test_discover_errors(tmp_path):
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(LandscapeError, match=r"no checkpoints found in .*looked for \*\.pth\.tar, \*\.pt"):
        discover_checkpoints(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        discover_checkpoints(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        discover_checkpoints([tmp_path / "missing.pt"])
    with pytest.raises(TypeError, match="int"):
        discover_checkpoints(3)


# ------------------------------------------------------------------------------------------- fingerprints, files

def test_file_fingerprint_small_and_big(tmp_path):
    small = tmp_path / "s.bin"
    small.write_bytes(b"abc" * 1000)
    fp = file_fingerprint(small)
    assert fp["hashed"] == "full" and fp["size"] == 3000
    assert fp["sha256"] == hashlib.sha256(b"abc" * 1000).hexdigest()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=3 * 2**20, dtype=np.uint8).tobytes()
    big = tmp_path / "b.bin"
    big.write_bytes(data)
    fp = file_fingerprint(big)
    assert fp["hashed"] == "ends"
    assert fp["sha256"] == hashlib.sha256(data[: 2**20] + data[-(2**20):]).hexdigest()
    big.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one flipped bit at the end
    assert file_fingerprint(big)["sha256"] != fp["sha256"]


def test_atomic_write_leaves_nothing_half_done(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    target = tmp_path / "r.parquet"
    df = pd.DataFrame({"a": [1.0, 2.0]})
    store.write_parquet(df, target, {"k": 1})
    before = target.read_bytes()

    def broken(table, where):
        Path(where).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        store.write_parquet(pd.DataFrame({"a": [3.0]}), target, {"k": 2})
    assert target.read_bytes() == before and tmp_files(tmp_path) == []
    monkeypatch.undo()
    frame, meta = read_result(target)
    assert frame["a"].tolist() == [1.0, 2.0] and meta == {"k": 1}


def test_summarise_samples_against_numpy():
    rng = np.random.default_rng(1)
    s = pd.DataFrame({"split": ["test"] * 20 + ["train"] * 10, "sample": list(range(20)) + list(range(10)),
                      "label": 0, "loss_clean": rng.random(30), "loss_adv": rng.random(30) + 1,
                      "correct_clean": rng.random(30) > 0.3, "correct_adv": rng.random(30) > 0.6,
                      "grad_l1": rng.random(30)})
    s.loc[3, "grad_l1"] = np.nan
    s.loc[4, "grad_l1"] = np.inf
    out = summarise_samples(s).set_index("split")
    assert out.index.tolist() == ["train", "test"]
    test = s[s["split"] == "test"]
    g = test["grad_l1"].to_numpy()
    g = g[np.isfinite(g)]
    assert out.loc["test", "n"] == 20 and out.loc["test", "nonfinite"] == 2
    assert out.loc["test", "acc_adv"] == pytest.approx(test["correct_adv"].mean())
    assert out.loc["test", "loss_adv"] == pytest.approx(test["loss_adv"].mean())
    assert out.loc["test", "grad_l1_mean"] == pytest.approx(g.mean())
    assert out.loc["test", "grad_l1_median"] == pytest.approx(np.median(g))
    assert out.loc["test", "grad_l1_q10"] == pytest.approx(np.quantile(g, 0.1))
    assert out.loc["test", "grad_l1_q90"] == pytest.approx(np.quantile(g, 0.9))
    assert out.loc["train", "nonfinite"] == 0


# ------------------------------------------------------------------------------------------- user errors

@pytest.mark.parametrize("kwargs, exc, match", [
    ({"executor": "threads"}, ValueError, "serial, process, ray"),
    ({"workers": 0}, ValueError, "workers"),
    ({"threads": 0}, ValueError, "threads"),
    ({"splits": ("val",)}, ValueError, "train"),
    ({"splits": "test"}, ValueError, "splits"),
    ({"norm": "l1"}, ValueError, "linf.*l2"),
    ({"n": 0}, ValueError, "n must be"),
])
def test_bad_settings_fail_before_the_run(tmp_path, kwargs, exc, match):
    d = make_run(tmp_path, epochs=(1,))
    with pytest.raises(exc, match=match):
        analyse_trajectory(d, "mlp", out_dir=tmp_path / "out", **{**KW, **kwargs})
    assert not (tmp_path / "out" / "trajectory.parquet").exists()


def test_unknown_arch_and_empty_dir(tmp_path):
    d = make_run(tmp_path, epochs=(1,))
    with pytest.raises(ValueError, match="unknown architecture 'mpl'.*mlp"):
        analyse_trajectory(d, "mpl", out_dir=tmp_path / "out", **KW)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LandscapeError, match="no checkpoints found"):
        analyse_trajectory(empty, "mlp", out_dir=tmp_path / "out", **KW)
    assert main(["trajectory", str(empty), "--arch", "mlp", "--out", str(tmp_path / "o2"), "--quiet"]) == 2


# ------------------------------------------------------------------------------------------- end to end

def test_table_matches_direct_evaluation(tmp_path):
    from landscape import measure
    from landscape.checkpoints import load_model
    from landscape.datasets import load_dataset

    d = make_run(tmp_path, epochs=(1, 2, 3))
    (d / "notes.json").write_text("{}")
    out = tmp_path / "out"
    table = analyse_trajectory(d, "mlp", out_dir=out, **KW)
    base = ["run", "epoch", "checkpoint", "split", "n", "acc_clean", "acc_adv", "loss_clean", "loss_adv"]
    assert table.columns[: len(base)].tolist() == base and table.columns[-2:].tolist() == ["nonfinite", "error"]
    assert {"grad_l1_mean", "grad_l2_median", "grad_linf_q10", "grad_l1_q90"} <= set(table.columns)
    assert table["epoch"].tolist() == [1, 1, 2, 2, 3, 3] and table["split"].tolist() == ["train", "test"] * 3
    assert table["run"].unique().tolist() == ["run"] and table["error"].isna().all()
    assert (table["n"] == 24).all() and table.attrs["skipped"] == [str(d / "notes.json")]

    # independent reference: the model and data loaded directly; clean loss/accuracy by plain evaluation
    model = load_model(d / "e2.pt", "mlp", hidden=HIDDEN)
    x, y = load_dataset("digits", "test", n=24, seed=0)
    with torch.no_grad():
        logits = model(x)
    row = table[(table["epoch"] == 2) & (table["split"] == "test")].iloc[0]
    assert row["loss_clean"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert row["acc_clean"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    direct = measure(model, x, y, eps=0.1, steps=2, measures=["grad"], batch_size=64, seed=0)
    assert row["acc_adv"] == pytest.approx(direct["correct_adv"].mean())
    assert row["grad_l1_mean"] == pytest.approx(direct["grad_l1"].mean())
    assert row["grad_l2_q90"] == pytest.approx(np.quantile(direct["grad_l2"], 0.9))

    # files: results per checkpoint with the fingerprint, samples, settings, diagnosis; no temporary files
    assert sorted(p.name for p in (out / "results").iterdir()) == ["e1.parquet", "e2.parquet", "e3.parquet"]
    rows, meta = read_result(out / "results" / "e2.parquet")
    assert len(rows) == 2 * 24 and set(rows["split"]) == {"train", "test"}
    assert (rows["epoch"] == 2).all() and (rows["checkpoint"] == str(d / "e2.pt")).all()
    assert meta["file"] == file_fingerprint(d / "e2.pt") and meta["stored_epoch"] == 2
    assert meta["settings"]["attack"]["eps"] == 0.1 and meta["settings"]["options"]["measures"] == ["grad"]
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == 3 * 2 * 24 and {"epoch", "split", "checkpoint", "grad_l1"} <= set(samples.columns)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "trajectory.parquet"), table)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["settings"]["arch"] == "mlp" and settings["computed"] == 3
    assert "best_epoch" in json.loads((out / "diagnosis.json").read_text())
    assert tmp_files(tmp_path) == []


def test_resume_after_crash_recomputes_only_missing(tmp_path, monkeypatch):
    d = make_run(tmp_path, epochs=(1, 2, 3, 4, 5))
    reference = analyse_trajectory(d, "mlp", out_dir=tmp_path / "ref", **KW)
    out = tmp_path / "out"
    real = worker.analyse_checkpoint
    calls: list[str] = []

    def crashing(path, settings, **kw):
        calls.append(Path(path).name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C / crash in the middle of the third checkpoint
        return real(path, settings, **kw)

    monkeypatch.setattr(worker, "analyse_checkpoint", crashing)
    with pytest.raises(KeyboardInterrupt):
        analyse_trajectory(d, "mlp", out_dir=out, **KW)
    assert sorted(p.name for p in (out / "results").iterdir()) == ["e1.parquet", "e2.parquet"]
    assert not (out / "trajectory.parquet").exists() and tmp_files(out) == []

    (out / "results" / ".e3.parquet.999.dead.tmp").write_bytes(b"half")  # stale file from a killed run
    calls.clear()
    monkeypatch.setattr(worker, "analyse_checkpoint", lambda p, s, **kw: (calls.append(Path(p).name),
                                                                             real(p, s, **kw))[1])
    table = analyse_trajectory(d, "mlp", out_dir=out, **KW)
    assert calls == ["e3.pt", "e4.pt", "e5.pt"]
    assert table.attrs["reused"] == 2 and table.attrs["computed"] == 3
    pd.testing.assert_frame_equal(table, reference, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "samples.parquet"),
                                  pd.read_parquet(tmp_path / "ref" / "samples.parquet"), check_exact=True)
    assert tmp_files(out) == []

    calls.clear()  # everything finished: a third run computes nothing
    again = analyse_trajectory(d, "mlp", out_dir=out, **KW)
    assert calls == [] and again.attrs["reused"] == 5
    pd.testing.assert_frame_equal(again, reference, check_exact=True)


def test_changed_settings_or_checkpoint_invalidate_the_cache(tmp_path, monkeypatch):
    d = make_run(tmp_path, epochs=(1, 2, 3))
    out = tmp_path / "out"
    first = analyse_trajectory(d, "mlp", out_dir=out, **KW)
    other_eps = analyse_trajectory(d, "mlp", out_dir=out, **{**KW, "eps": 0.05})
    assert other_eps.attrs["computed"] == 3 and other_eps.attrs["reused"] == 0
    assert not np.allclose(other_eps["loss_adv"], first["loss_adv"])
    assert analyse_trajectory(d, "mlp", out_dir=out, **{**KW, "eps": 0.05}).attrs["reused"] == 3

    save_ckpt(d / "e2.pt", 2, seed=123)  # the checkpoint was rewritten (e.g. training restarted)
    changed = analyse_trajectory(d, "mlp", out_dir=out, **{**KW, "eps": 0.05})
    assert changed.attrs["computed"] == 1 and changed.attrs["reused"] == 2
    fresh = analyse_trajectory(d, "mlp", out_dir=tmp_path / "fresh", **{**KW, "eps": 0.05})
    pd.testing.assert_frame_equal(changed, fresh, check_exact=True)
    assert not np.allclose(changed.loc[changed["epoch"] == 2, "loss_clean"],
                           other_eps.loc[other_eps["epoch"] == 2, "loss_clean"])


def test_failing_checkpoints_are_recorded_and_the_run_goes_on(tmp_path, capsys):
    d = make_run(tmp_path, epochs=(1, 2, 4))
    (d / "e3.pt").write_bytes(b"this is not a checkpoint")
    save_ckpt(d / "e5.pt", 5, hidden=(8,))  # wrong architecture for --arch-arg hidden=(16,)
    out = tmp_path / "out"
    table = analyse_trajectory(d, "mlp", out_dir=out, **KW)
    assert table.attrs["failed"] == 2
    failed = table[table["error"].notna()]
    assert sorted(set(failed["epoch"])) == [3, 5] and (failed["n"] == 0).all() and failed["acc_adv"].isna().all()
    assert all("\n" not in e for e in failed["error"])
    assert failed.loc[failed["epoch"] == 3, "error"].iloc[0].count("e3.pt") >= 1
    assert table[table["error"].isna()]["epoch"].unique().tolist() == [1, 2, 4]
    assert sorted(p.name for p in (out / "results").iterdir()) == ["e1.parquet", "e2.parquet", "e4.parquet"]
    assert json.loads((out / "diagnosis.json").read_text())["n_epochs"] == 3

    code = main(["trajectory", str(d), "--arch", "mlp", "--arch-arg", "hidden=(16,)", "--n", "24", "--steps", "2",
                 "--measures", "grad", "--batch-size", "64", "--out", str(tmp_path / "cli"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "2 checkpoint(s) failed" in captured.err and "e5.pt" in captured.err and "shape" in captured.err
    assert "5 checkpoint(s) (5 computed, 0 reused), 2 failed" in captured.out


def test_checkpoint_still_being_written_is_retried(tmp_path, monkeypatch):
    d = make_run(tmp_path, epochs=(1,))
    full = (d / "e1.pt").read_bytes()
    (d / "e1.pt").write_bytes(full[: len(full) // 2])  # the trainer is half-way through writing it
    sleeps: list[float] = []

    def writer_finishes(seconds):
        sleeps.append(seconds)
        (d / "e1.pt").write_bytes(full)
        os.utime(d / "e1.pt", ns=(1, 10**18))  # make sure the mtime moves even on coarse clocks

    monkeypatch.setattr(worker.time, "sleep", writer_finishes)
    table = analyse_trajectory(d, "mlp", out_dir=tmp_path / "out", **KW)
    assert sleeps == [KW["retry_delay"]] and table["error"].isna().all() and table.attrs["failed"] == 0

    (d / "e1.pt").write_bytes(full[: len(full) // 2])  # truncated for good: one wait, then recorded
    sleeps.clear()
    monkeypatch.setattr(worker.time, "sleep", lambda s: sleeps.append(s))
    table = analyse_trajectory(d, "mlp", out_dir=tmp_path / "out", **KW)
    assert sleeps == [KW["retry_delay"]] and table.attrs["failed"] == 1
    assert not (tmp_path / "out" / "results" / "e1.parquet").exists()  # the stale good result is gone


def test_epochs_from_checkpoint_contents_duplicates_and_order(tmp_path):
    d = tmp_path / "advlc"
    d.mkdir()
    save_ckpt(d / "r_end.pth.tar", 5)
    save_ckpt(d / "r_pgd.pth.tar", 3, seed=7)
    save_ckpt(d / "r_acc.pth.tar", 3, seed=7)
    with pytest.warns(TrajectoryWarning, match="duplicated epochs"):
        table = analyse_trajectory(d, "mlp", out_dir=tmp_path / "o1", splits=("test",), **KW)
    assert table["epoch"].tolist() == [3, 3, 5]
    assert [Path(c).name for c in table["checkpoint"]] == ["r_acc.pth.tar", "r_pgd.pth.tar", "r_end.pth.tar"]
    assert table.attrs["duplicates"] == {3: [str(d / "r_acc.pth.tar"), str(d / "r_pgd.pth.tar")]}
    assert len(table.attrs["unparsed"]) == 3 and table.attrs["no_epoch"] == []

    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ["b.pt", "a.pt", "c10.pt"]:
        save_ckpt(plain / name, None, seed=len(name))
    with pytest.warns(TrajectoryWarning, match="name order"):
        table = analyse_trajectory([plain / "b.pt", plain / "a.pt"], "mlp", out_dir=tmp_path / "o2",
                                   splits=("test",), **KW)
    assert [Path(c).name for c in table["checkpoint"]] == ["a.pt", "b.pt"] and table["epoch"].tolist() == [1, 2]

    save_ckpt(plain / "e7.pt", 8)
    with pytest.warns(TrajectoryWarning, match="stores epoch 8"):
        table = analyse_trajectory([plain / "e7.pt"], "mlp", out_dir=tmp_path / "o3", splits=("test",), **KW)
    assert table["epoch"].tolist() == [8]


def test_process_executor_gives_identical_table(tmp_path):
    d = make_run(tmp_path, epochs=(1, 2, 3))
    serial = analyse_trajectory(d, "mlp", out_dir=tmp_path / "serial", **KW)
    process = analyse_trajectory(d, "mlp", out_dir=tmp_path / "process", executor="process", workers=2, **KW)
    pd.testing.assert_frame_equal(process, serial, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "process" / "samples.parquet"),
                                  pd.read_parquet(tmp_path / "serial" / "samples.parquet"), check_exact=True)


def test_ray_executor_gives_identical_table(tmp_path):
    ray = pytest.importorskip("ray")
    d = make_run(tmp_path, epochs=(1, 2, 3))
    serial = analyse_trajectory(d, "mlp", out_dir=tmp_path / "serial", splits=("test",), **KW)
    try:
        result = analyse_trajectory(d, "mlp", out_dir=tmp_path / "ray", splits=("test",), executor="ray",
                                    workers=2, **KW)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert not ray.is_initialized()  # the local cluster it started is shut down again
    pd.testing.assert_frame_equal(result, serial, check_exact=True)


def test_missing_ray_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    d = make_run(tmp_path, epochs=(1,))
    with pytest.raises(LandscapeError, match=r"pip install 'landscape\[ray\]'"):
        analyse_trajectory(d, "mlp", out_dir=tmp_path / "out", executor="ray", **KW)


# ------------------------------------------------------------------------------------------- Rice et al. folders

def _rice_folder(root: Path, epochs: int = 4, best: int = 2) -> Path:
    """A run folder written the way Rice et al.'s ``train_cifar.py`` writes one: an ``nn.DataParallel``
    model saved as a bare state dict ``model_{epoch}.pth`` with 0-based epochs, the optimizer state as
    ``opt_{epoch}.pth``, ``model_best.pth`` as ``{'state_dict', 'test_robust_acc', ...}`` and a log file."""
    d = root / "rice"
    d.mkdir()
    torch.manual_seed(0)
    model = torch.nn.DataParallel(create_model("mlp", hidden=HIDDEN))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    x, y = load_dataset("digits", "train", n=64, seed=1)
    for epoch in range(epochs):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        torch.save(model.state_dict(), d / f"model_{epoch}.pth")
        torch.save(opt.state_dict(), d / f"opt_{epoch}.pth")
        if epoch == best:
            torch.save({"state_dict": model.state_dict(), "test_robust_acc": 0.5, "test_robust_loss": 1.25,
                        "test_loss": 0.75, "test_acc": 0.625}, d / "model_best.pth")
    (d / "output.log").write_text("Epoch \t Train Time \t Test Time\n")
    return d


@pytest.mark.parametrize("name, optimizer, marker", [
    ("opt_12.pth", True, None), ("optimizer_3.pt", True, None), ("optim.pth", True, None),
    ("model_12.pth", False, None), ("options.pt", False, None), ("model_best.pth", False, "best"),
    ("best.pt", False, "best"), ("resnet18_best.pth.tar", False, "best"), ("model_val.pth", False, "val"),
    ("bestmodel_3.pt", False, None), ("interval.pt", False, None),
])
def test_optimizer_states_and_markers_by_name(name, optimizer, marker):
    assert trajectory.is_optimizer_state(name) is optimizer
    assert trajectory.marker_kind(name) == marker


def test_rice_folder_skips_optimizer_states_once_and_reads_model_best_as_a_marker(tmp_path, capsys):
    d = _rice_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = analyse_trajectory(d, "mlp", out_dir=tmp_path / "out", splits=("test",), **KW)
    notes = [str(w.message) for w in caught if issubclass(w.category, TrajectoryWarning)]
    assert sum("optimizer-state" in t for t in notes) == 1, notes
    assert sum("model_best.pth = epoch 2" in t for t in notes) == 1, notes
    assert table.attrs["failed"] == 0 and table["error"].isna().all()
    assert table["epoch"].tolist() == [0, 1, 2, 3]  # as the trainer numbered them (0-based), not renumbered
    assert sorted(Path(p).name for p in table.attrs["optimizer_states"]) == [f"opt_{i}.pth" for i in range(4)]
    assert table.attrs["skipped"] == [str(d / "output.log")]
    [marker] = table.attrs["markers"]
    assert marker["epoch"] == 2 and marker["kind"] == "best" and marker["meta"]["test_robust_acc"] == 0.5
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["markers"][0]["epoch"] == 2

    x, y = load_dataset("digits", "test", n=KW["n"], seed=0)  # the subset the trajectory measured
    for epoch in range(4):  # each row holds the numbers of model_{epoch}.pth evaluated directly
        net = create_model("mlp", hidden=HIDDEN)
        raw = torch.load(d / f"model_{epoch}.pth", weights_only=True)
        net.load_state_dict({k.removeprefix("module."): v for k, v in raw.items()})
        with torch.no_grad():
            logits = net.eval()(x)
        row = table[table["epoch"] == epoch].iloc[0]
        assert row["loss_clean"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
        assert row["acc_clean"] == pytest.approx((logits.argmax(1) == y).double().mean().item())
    assert best_last_epochs(table)[table["run"].iloc[0]]["last"] == 3

    argv = ["trajectory", str(d), "--arch", "mlp", "--arch-arg", "hidden=(16,)", "--n", str(KW["n"]), "--steps",
            "2", "--measures", "grad", "--splits", "test", "--out", str(tmp_path / "cli"), "--quiet"]
    with warnings.catch_warnings():  # restores showwarning, which the CLI sets for its notes
        capsys.readouterr()
        assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("landscape: note: skipped 4 optimizer-state file(s)") == 1, err
    assert err.count("landscape: note: best-model copies") == 1 and "Warning" not in err, err


def test_a_lone_best_copy_is_measured(tmp_path):
    d = _rice_folder(tmp_path, epochs=3, best=1)
    table = analyse_trajectory([d / "model_best.pth"], "mlp", out_dir=tmp_path / "out", splits=("test",), **KW)
    assert table.attrs["failed"] == 0 and len(table) == 1 and table.attrs["markers"] == []


def test_only_optimizer_states_is_a_clear_error(tmp_path):
    d = _rice_folder(tmp_path, epochs=2)
    for p in d.glob("model_*.pth"):
        p.unlink()
    with pytest.raises(LandscapeError, match="only optimizer states: opt_0.pth"):
        discover_checkpoints(d)


# ------------------------------------------------------------------------------------------- devices, worker death

def test_process_workers_are_spread_over_the_gpus(monkeypatch):
    from landscape.trajectory import executors

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert executors.worker_devices("cuda", 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert executors.worker_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]  # an explicit GPU is kept
    assert executors.worker_devices("cpu", 2) == ["cpu", "cpu"]
    assert executors.default_workers("process", "cuda") == 3
    assert executors.default_workers("process", "cpu") == executors.default_workers("serial", "cuda") == 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert executors.worker_devices("cuda", 2) == ["cuda", "cuda"]


class _KillsTheProcess:
    """Unpickling this exits the process at once, as an out-of-memory kill would."""

    def __reduce__(self):
        return (os._exit, (3,))


def test_a_worker_that_dies_is_replaced_and_only_its_checkpoint_fails(tmp_path):
    d = make_run(tmp_path, epochs=(1, 2, 3, 4))
    serial = analyse_trajectory(d, "mlp", out_dir=tmp_path / "serial", splits=("test",), **KW)
    torch.save({"state_dict": {}, "payload": _KillsTheProcess()}, d / "e5.pt")
    with pytest.warns(TrajectoryWarning, match="worker process died"):
        table = analyse_trajectory(d, "mlp", out_dir=tmp_path / "process", splits=("test",), executor="process",
                                   workers=2, trusted=True, **KW)
    assert table.attrs["failed_checkpoints"] == [str(d / "e5.pt")]
    assert "died twice" in table.loc[table["epoch"] == 5, "error"].iloc[0]
    good = table[table["epoch"] != 5].reset_index(drop=True)
    pd.testing.assert_frame_equal(good, serial, check_exact=True)


def test_serial_executor_reads_the_next_checkpoint_while_measuring_the_current_one(tmp_path, monkeypatch):
    import threading

    d = make_run(tmp_path, epochs=(1, 2, 3))
    reference = analyse_trajectory(d, "mlp", out_dir=tmp_path / "ref", splits=("test",), **KW)
    real_read, real_measure = worker.read_checkpoint, worker._measure
    reads: list[tuple[str, str]] = []
    next_read = {name: threading.Event() for name in ("e2.pt", "e3.pt")}

    def read(path, trusted):
        reads.append((Path(path).name, threading.current_thread().name))
        if Path(path).name in next_read:
            next_read[Path(path).name].set()
        return real_read(path, trusted)

    def measure_while_next_is_read(ckpt, settings, device):
        following = {"e1.pt": "e2.pt", "e2.pt": "e3.pt"}.get(Path(ckpt.path).name)
        if following is not None:  # the next file's read starts during this measurement, not after it
            assert next_read[following].wait(timeout=30), f"{following} was not read ahead"
        return real_measure(ckpt, settings, device)

    monkeypatch.setattr(worker, "read_checkpoint", read)
    monkeypatch.setattr(worker, "_measure", measure_while_next_is_read)
    table = analyse_trajectory(d, "mlp", out_dir=tmp_path / "out", splits=("test",), **KW)
    assert [name for name, _ in reads] == ["e1.pt", "e2.pt", "e3.pt"]  # each file read once
    assert all(thread.startswith("landscape-prefetch") for _, thread in reads)
    pd.testing.assert_frame_equal(table, reference, check_exact=True)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"eps": -0.1}, ValueError, "eps must be a finite number >= 0"),
    ({"eps": "8"}, TypeError, "eps must be a number"),
    ({"attack": "cw"}, ValueError, "unknown attack 'cw'.*pgd"),
    ({"norm": "l1"}, ValueError, "unknown norm 'l1'"),
    ({"steps": 0}, ValueError, "steps must be >= 1"),
    ({"measures": ("grad", "curvv")}, ValueError, "curvv"),
    ({"splits": ("test", "test")}, ValueError, "at most once"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"arch": 3}, TypeError, "arch must be"),
])
def test_settings_validate_themselves_like_measure(kwargs, exc, match):
    from landscape import measure

    with pytest.raises(exc, match=match):
        trajectory.TrajectorySettings.create(**{"arch": "mlp", **kwargs})
    attack_kwargs = {k: v for k, v in kwargs.items() if k in ("eps", "attack", "norm", "steps", "measures")}
    if attack_kwargs:  # the same value fails landscape.measure with the same kind of error
        model = create_model("mlp", hidden=HIDDEN)
        args = {"eps": 0.1, **attack_kwargs}
        if "measures" in args:
            args["measures"] = list(args["measures"])
        with pytest.raises(exc):
            measure(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), **args)


def test_official_attack_and_whole_options_reach_every_checkpoint(tmp_path):
    """attack="official" measures at the official evaluation point (PGD-10, step eps/4, no random start) and
    every MeasureSettings field travels to the worker: the rows equal landscape.measure with the same objects."""
    from landscape import load_model, measure
    from landscape.attacks import AttackSettings
    from landscape.datasets import load_dataset
    from landscape.measures.settings import MeasureSettings

    d = make_run(tmp_path, epochs=(1, 2))
    opts = MeasureSettings(measures=("grad", "curv_adv"), batch_size=8, seed=5, eig_iters=3, hvp_method="func",
                           dtype="float64")
    analyse_trajectory(d, "mlp", out_dir=tmp_path / "out", attack="official", eps=0.1, options=opts, n=24,
                       splits=("test",), arch_kwargs={"hidden": HIDDEN}, progress=False)
    rows, meta = read_result(tmp_path / "out" / "results" / "e2.parquet")
    official = AttackSettings.official(0.1)
    assert meta["settings"]["attack"] == official.to_dict() and meta["settings"]["options"] == opts.to_dict()
    x, y = load_dataset("digits", "test", n=24, seed=5)
    want = measure(load_model(d / "e2.pt", "mlp", hidden=HIDDEN), x, y, settings=official, options=opts)
    got = rows.drop(columns=["epoch", "checkpoint", "split", "sample_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want[got.columns], check_exact=True)
    with pytest.raises(ValueError, match="either whole or as eps"):
        trajectory.TrajectorySettings.create("mlp", attack=official, eps=0.2)


def test_each_checkpoint_header_is_read_once(tmp_path, monkeypatch):
    """The stored epochs (for best-model copies) and the run's wiring come from one read of each file's header."""
    import shutil

    from landscape.trajectory import wiring

    d = make_run(tmp_path, epochs=(1, 2))
    shutil.copyfile(d / "e2.pt", d / "model_best.pt")
    reads = []
    real = wiring.read_header
    counting = lambda path, **kw: reads.append(Path(path).name) or real(path, **kw)  # noqa: E731
    monkeypatch.setattr(wiring, "read_header", counting)
    import landscape.trajectory.analyse as analyse_module  # any reader of its own would be counted too

    monkeypatch.setattr(analyse_module, "read_header", counting, raising=False)
    analyse_trajectory(d, "mlp", out_dir=tmp_path / "out", splits=("test",), **KW)
    assert sorted(reads) == ["e1.pt", "e2.pt", "model_best.pt"]
