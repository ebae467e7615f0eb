"""landscape.monitor: bit-identical training, a live run folder, resume, NaN rows, argument checks, the rules."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from landscape.datasets import load_dataset
from landscape.diagnose import best_index, run_diagnoses
from landscape.monitor import LandscapeRule, Monitor, OverfitEvent, PatienceRule, replay
from landscape.trajectory.assemble import summary_row
from landscape.monitor.isolation import isolated
from landscape.runs import Run
from landscape.training import seeded_model, train
from landscape.trajectory.assemble import summarise_samples

EPS = 0.1
FAST = dict(eps=EPS, attack="pgd", n=24, batch_size=16)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train", n=60, seed=0), load_dataset("digits", "test", n=40, seed=0)


def _probe(digits):
    return digits[1]


class BNNet(nn.Module):
    """A tiny conv net with batch norm and dropout (buffers and a stochastic layer to protect)."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                               nn.Dropout(0.2), nn.Linear(4 * 64, 10))

    def forward(self, x):
        return self.f(x)


def _bn_net(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BNNet()


def _train(model, data, out, on_epoch=None, epochs=3):
    return train(model, data, method="pgd_at", eps=EPS, steps=2, epochs=epochs, lr=0.05, batch_size=16, seed=0,
                 eval_steps=2, progress=False, out_dir=out, on_epoch=on_epoch)


def _opt_state(out):
    return torch.load(out / "resume.pt", weights_only=True)["optimizer"]


def _same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _same_nested(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same_nested(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same_nested(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("make", [lambda: seeded_model("mlp", 0, hidden=(16,)), _bn_net], ids=["mlp", "bn_conv"])
def test_training_is_bit_identical_with_the_monitor(tmp_path, digits, make):
    plain, watched = make(), make()
    opts = {}

    def keep(name, then=None):
        def on_epoch(epoch, model, optimizer):
            opts[name] = optimizer  # the optimizer train() built, to compare its state at the end
            if then is not None:
                then(epoch, model, optimizer)
        return on_epoch

    _train(plain, digits, tmp_path / "plain", on_epoch=keep("plain"), epochs=3)
    with Monitor(watched, {"train": digits[0], "test": digits[1]}, out=tmp_path / "mon", keep_best=True,
                 **FAST) as mon:
        _train(watched, digits, tmp_path / "watched", on_epoch=keep("watched", mon.callback), epochs=3)
    _same_state(plain.state_dict(), watched.state_dict())
    _same_nested(opts["plain"].state_dict(), opts["watched"].state_dict())
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "plain" / "metrics.csv").drop(columns="time_s"),
                                  pd.read_csv(tmp_path / "watched" / "metrics.csv").drop(columns="time_s"))
    assert len(mon.curve()) == 3


@pytest.mark.parametrize("make", [lambda: seeded_model("mlp", 0, hidden=(16,)), _bn_net], ids=["mlp", "bn_conv"])
def test_hand_written_loop_with_global_rng_dropout_is_bit_identical(tmp_path, digits, make):
    states = {}
    for name, attach in (("plain", False), ("watched", True)):
        model = make()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        mon = Monitor(model, _probe(digits), out=tmp_path / f"mon_{name}", **FAST) if attach else None
        x, y = digits[0]
        torch.manual_seed(123)  # the global RNG drives dropout here: the monitor must not draw from it
        for epoch in range(1, 4):
            model.train()
            for i in range(0, len(x), 16):
                loss = nn.functional.cross_entropy(model(x[i:i + 16]), y[i:i + 16])
                opt.zero_grad()
                loss.backward()
                opt.step()
            if mon is not None:
                mon.step(epoch)
        states[name] = (model.state_dict(), opt.state_dict(), torch.get_rng_state(), model.training)
    _same_state(states["plain"][0], states["watched"][0])
    _same_nested(states["plain"][1], states["watched"][1])
    assert torch.equal(states["plain"][2], states["watched"][2])
    assert states["plain"][3] == states["watched"][3]


def test_step_restores_rngs_modes_buffers_and_grads(tmp_path, digits):
    model = _bn_net()
    model.train()
    model.f[1].eval()  # a mixed mode survives
    x, y = digits[0]
    nn.functional.cross_entropy(model(x[:8]), y[:8]).backward()
    grads = [p.grad for p in model.parameters()]
    values = [g.clone() for g in grads]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    rng = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    Monitor(model, _probe(digits), out=tmp_path / "m", **FAST).step(1)
    assert random.getstate() == rng[0]
    assert np.array_equal(np.random.get_state()[1], rng[1])
    assert torch.equal(torch.get_rng_state(), rng[2])
    assert model.training and not model.f[1].training and model.f[0].training
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(p.grad, v) for p, v in zip(model.parameters(), values))
    _same_state(buffers, model.state_dict())
    fresh = _bn_net()
    Monitor(fresh, _probe(digits), out=tmp_path / "m2", **FAST).step(1)
    assert all(p.grad is None for p in fresh.parameters())


def test_isolated_puts_back_buffers_and_rng_after_an_error():
    model = _bn_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError), isolated(model):
        model.train()
        model(torch.rand(4, 1, 8, 8))  # updates the BN running statistics, draws dropout masks
        raise RuntimeError("boom")
    _same_state(before, model.state_dict())
    assert torch.equal(torch.get_rng_state(), state)


def test_folder_is_a_run_that_diagnose_reads_while_training(tmp_path, digits):
    model = seeded_model("mlp", 0, hidden=(16,))
    out = tmp_path / "mon"
    seen = []

    def on_epoch(epoch, m, opt):
        mon.callback(epoch, m, opt)
        seen.append(run_diagnoses(out)[next(iter(run_diagnoses(out)))].last_epoch)

    mon = Monitor(model, {"train": digits[0], "test": digits[1]}, out=out, **FAST)
    _train(model, digits, tmp_path / "run", on_epoch=on_epoch, epochs=3)
    mon.close()
    assert seen == [1, 2, 3]
    table = Run(out).read("trajectory")
    assert sorted(set(table["split"])) == ["test", "train"]
    assert {"acc_adv", "loss_adv", "grad_l1_mean", "curv_adv_mean", "fo_share_median"} <= set(table.columns)
    assert Run(out).find("diagnosis") is not None
    assert not list(out.glob(".*.tmp"))


def test_summary_matches_the_trajectory_summary(tmp_path, digits):
    from landscape.measures import measure

    df = measure(seeded_model("mlp", 0, hidden=(16,)), *digits[1], eps=EPS, measures=["grad", "curv_adv",
                                                                                        "fo_share"])
    cols = [c for c in df.columns if c.startswith(("grad_", "curv_", "fo_"))]
    ref = summarise_samples(df.assign(split="test"), cols).iloc[0].to_dict()
    mine = summary_row({c: df[c].to_numpy() for c in df.columns}, cols)  # the columns as the monitor holds them
    for k, v in mine.items():
        assert ref[k] == pytest.approx(v, nan_ok=True), k


@pytest.mark.parametrize("make", [lambda: seeded_model("mlp", 0, hidden=(16,)), _bn_net], ids=["mlp", "bn_conv"])
def test_fast_probe_columns_equal_measure_bit_for_bit(digits, make):
    """The monitor's hot path (measure()'s per-batch computation without its per-call setup) gives measure()'s
    columns exactly: same batches, seeds, dtypes and values."""
    from landscape._base import model_device
    from landscape.attacks import AttackSettings
    from landscape.measures import measure
    from landscape.monitor.probe import checked_probe, measure_columns

    model = make()
    x, y = digits[1]
    settings = AttackSettings(attack="pgd", eps=EPS, steps=3)
    names = ["grad", "curv_adv", "fo_share"]
    ref = measure(model, x, y, settings=settings, measures=names, batch_size=16, seed=3)
    xd, yd = checked_probe(model, x, y, model_device(model))
    mine = measure_columns(model, xd, yd, settings=settings, measures=names, batch_size=16, seed=3)
    assert list(mine) == list(ref.columns)
    for c in ref.columns:
        assert mine[c].dtype == ref[c].to_numpy().dtype, c
        np.testing.assert_array_equal(mine[c], ref[c].to_numpy(), err_msg=c)


def test_trajectory_file_equals_the_pandas_conversion(tmp_path, digits):
    """The parquet written straight from the rows holds what pa.Table.from_pandas(table) holds, metadata too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = seeded_model("mlp", 0, hidden=(16,))
    mon = Monitor(model, {"train": digits[0], "test": digits[1]}, out=tmp_path / "mon", **FAST)
    for epoch in (1, 2, 3):
        mon.step(epoch)
    mon.probe = {"test": mon.probe["test"][:1] + (torch.full_like(mon.probe["test"][1], 99),)}
    mon._on_device.clear()
    mon.step(4)  # a failed split: an error row (a string in the error column)
    written = pq.read_table(Run(tmp_path / "mon").path("trajectory"))
    assert written.equals(pa.Table.from_pandas(mon.table, preserve_index=False), check_metadata=True)
    assert isinstance(mon.table["error"].iloc[-1], str)
    pd.testing.assert_frame_equal(Run(tmp_path / "mon").read("trajectory"), mon.table)


def test_remeasured_epoch_rebuilds_the_cached_columns(tmp_path, digits):
    """The per-column caches follow a re-measured (replaced) epoch in the middle of the rows."""
    model = seeded_model("mlp", 0, hidden=(16,))
    mon = Monitor(model, _probe(digits), out=tmp_path / "mon", **FAST)
    for epoch in (1, 2, 3, 2, 4):
        mon.step(epoch)
    table = Run(tmp_path / "mon").read("trajectory")
    assert table["epoch"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(table, mon._frame(mon._rows))
    pd.testing.assert_frame_equal(mon._frame([r for r in mon._rows if r["split"] == "test"], cache="curve"),
                                  mon.curve("test"))


def test_smooth_equals_the_numpy_median_of_the_finite_window():
    from landscape.monitor.rules import smooth

    rng = np.random.default_rng(0)
    for _ in range(300):
        v = rng.normal(size=int(rng.integers(0, 30))) * 10.0 ** rng.uniform(-4, 4)
        v[rng.random(v.size) < 0.2] = np.nan
        v[rng.random(v.size) < 0.05] = np.inf
        for w in (1, 2, 5):
            ref = [np.median(p[np.isfinite(p)]) if np.isfinite(p).any() else np.nan
                   for p in (v[max(0, i - w + 1):i + 1] for i in range(v.size))]
            np.testing.assert_array_equal(smooth(v, w), np.asarray(ref, dtype=float))


def test_keep_best_follows_the_official_rule(tmp_path, digits):
    model = seeded_model("mlp", 0, hidden=(16,))
    out = tmp_path / "mon"
    with Monitor(model, _probe(digits), out=out, keep_best=True, **FAST) as mon:
        _train(model, digits, tmp_path / "run", on_epoch=mon.callback, epochs=4)
    curve = mon.curve()
    best = int(curve["epoch"].iloc[best_index(curve["acc_adv"].to_numpy())])
    stored = torch.load(out / "model_best.pt", weights_only=False)
    assert stored["epoch"] == best
    assert Run(out).markers()[0]["epoch"] == best
    if best == 4:
        _same_state(stored["state_dict"], model.state_dict())


def test_resume_appends_epochs_without_duplicates(tmp_path, digits):
    model = seeded_model("mlp", 0, hidden=(16,))
    out = tmp_path / "mon"
    mon = Monitor(model, _probe(digits), out=out, **FAST)
    mon.step(1)
    mon.step(2)
    (out / ".trajectory.parquet.123.abcd.tmp").write_bytes(b"half")  # what a SIGKILL may leave
    again = Monitor(model, _probe(digits), out=out, **FAST)
    assert not list(out.glob(".*.tmp"))
    again.step(2)  # a resumed trainer repeats the epoch it had not saved
    again.step(3)
    table = Run(out).read("trajectory")
    assert table["epoch"].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="out"):
        Monitor(model, _probe(digits), out=out, eps=0.2, n=24, batch_size=16)


def test_nan_losses_are_rows_not_errors(tmp_path, digits):
    model = seeded_model("mlp", 0, hidden=(16,))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    mon = Monitor(model, _probe(digits), out=tmp_path / "mon", **FAST)
    mon.step(1)
    row = Run(tmp_path / "mon").read("trajectory").iloc[0]
    assert row["epoch"] == 1
    assert row["nonfinite"] > 0 or isinstance(row["error"], str)


@pytest.mark.parametrize("kw, name", [
    (dict(eps=2.0), "eps"), (dict(eps=None), "eps"), (dict(every=0), "every"), (dict(measures=["nope"]), "measures"),
    (dict(attack="cw"), "attack"), (dict(keep_best="yes"), "keep_best"), (dict(on_overfit="halt"), "on_overfit"),
    (dict(n=0), "n"), (dict(seed=1.5), "seed"), (dict(rule=3), "rule"), (dict(probe=[1, 2, 3]), "probe"),
    (dict(probe={"val": None}), "probe"), (dict(model="net"), "model"),
])
def test_bad_arguments_fail_at_construction_in_one_line(tmp_path, digits, kw, name):
    args = dict(model=seeded_model("mlp", 0, hidden=(16,)), probe=_probe(digits), eps=EPS, out=tmp_path / "m")
    args.update(kw)
    with pytest.raises((ValueError, TypeError)) as err:
        Monitor(args.pop("model"), args.pop("probe"), **args)
    text = str(err.value)
    assert name in text and "\n" not in text
    assert not (tmp_path / "m").exists()


def _curve(acc, loss, curv=None, fo=None):
    n = len(acc)
    return pd.DataFrame({"epoch": np.arange(1, n + 1), "acc_adv": acc, "loss_adv": loss,
                         "curv_adv_mean": curv if curv is not None else np.ones(n),
                         "fo_share_median": fo if fo is not None else np.ones(n)})


def test_patience_rule():
    acc = [0.1, 0.3, 0.5, 0.5, 0.4, 0.4, 0.4]
    assert PatienceRule(3).check(_curve(acc[:5], acc[:5])) is None
    event = replay(_curve(acc, acc), PatienceRule(3))
    assert (event.epoch, event.best_epoch, event.best_acc_adv) == (7, 4, 0.5)  # latest epoch on ties


def test_landscape_rule_needs_the_rise_and_the_landscape():
    e = np.arange(40)
    loss = np.where(e < 15, 2.0 - 0.1 * e, 0.5 + 0.05 * (e - 15))
    acc = np.where(e < 15, 0.02 * e, 0.3 - 0.005 * (e - 15))
    flat = replay(_curve(acc, loss), LandscapeRule())
    assert flat is None  # the loss rose but curvature and first-order share stayed put
    curv = np.where(e < 15, 1.0, 1.0 + 0.1 * (e - 15))
    event = replay(_curve(acc, loss, curv=curv), LandscapeRule())
    assert event is not None and 15 < event.epoch < 30 and abs(event.best_epoch - 15) <= 3
    assert replay(_curve(acc, loss), LandscapeRule(confirm=False)) is not None
    with pytest.raises(ValueError, match="window"):
        LandscapeRule(window=0)


def test_on_overfit_stop_ends_training_in_the_with_block(tmp_path, digits):
    class Always:
        def check(self, curve):
            if len(curve) >= 2:
                return OverfitEvent(int(curve["epoch"].iloc[-1]), 1, 0.0, "always", "test")
            return None

    model = seeded_model("mlp", 0, hidden=(16,))
    with Monitor(model, _probe(digits), out=tmp_path / "mon", rule=Always(), on_overfit="stop", **FAST) as mon:
        _train(model, digits, tmp_path / "run", on_epoch=mon.callback, epochs=5)
    assert mon.event.epoch == 2 and mon.should_stop
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["epoch"].max() == 2
    assert Run(tmp_path / "mon").read("settings")["monitor"]["events"][0]["epoch"] == 2
    calls = []
    mon2 = Monitor(model, _probe(digits), out=tmp_path / "mon2", rule=Always(), on_overfit=calls.append, **FAST)
    for epoch in range(1, 5):
        mon2.step(epoch)
    assert [c.epoch for c in calls] == [2]  # called once, at the first warning


def test_sigkill_mid_training_leaves_a_readable_folder(tmp_path):
    out = tmp_path / "mon"
    script = textwrap.dedent(f"""
        import torch
        from landscape.datasets import load_dataset
        from landscape.monitor import Monitor
        from landscape.training import seeded_model
        torch.set_num_threads(1)
        model = seeded_model("mlp", 0, hidden=(16,))
        mon = Monitor(model, load_dataset("digits", "test", n=24), eps=0.1, out={str(out)!r}, n=24,
                      samples=True)
        for epoch in range(1, 100000):
            mon.step(epoch)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "settings.json").exists():
            time.sleep(0.2)
        time.sleep(1.0 + random.random())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (out / "settings.json").exists(), proc.stderr.read().decode()[-2000:]
    for name in ("trajectory.parquet", "samples.parquet"):
        pd.read_parquet(out / name)  # whole files only
    diag = run_diagnoses(out)
    assert next(iter(diag.values())).last_epoch >= 1
    Monitor(seeded_model("mlp", 0, hidden=(16,)), load_dataset("digits", "test", n=24), eps=0.1, out=out, n=24,
            samples=True)
    assert not list(out.glob(".*.tmp"))


def test_one_pass_replay_equals_the_epoch_by_epoch_checks():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = 60
        e = np.arange(n)
        loss = 2 - 0.05 * np.minimum(e, 20) + 0.03 * np.maximum(e - 20, 0) + rng.normal(0, 0.05, n)
        acc = 0.5 + rng.normal(0, 0.05, n)
        curv = 1 + 0.02 * e * rng.uniform(0, 2) + rng.normal(0, 0.05, n)
        fo = 1 - 0.005 * e + rng.normal(0, 0.02, n)
        curve = _curve(acc, loss, curv, fo)
        rule = LandscapeRule(rise=float(rng.choice([0.02, 0.1, 0.3])), hold=int(rng.integers(1, 8)),
                             confirm=bool(trial % 2))
        slow = next((ev for i in range(1, n + 1) if (ev := rule.check(curve.iloc[:i])) is not None), None)
        assert replay(curve, rule) == slow


def test_patience_one_pass_equals_the_epoch_by_epoch_checks():
    rng = np.random.default_rng(1)
    for k in (1, 3, 7):
        acc = np.round(rng.uniform(0, 1, 50), 1)
        curve = _curve(acc, acc)
        rule = PatienceRule(k)
        slow = next((ev for i in range(1, 51) if (ev := rule.check(curve.iloc[:i])) is not None), None)
        assert replay(curve, rule) == slow
