"""Training loops: schedules, label noise, checkpoints in the AdvLC format, resume, determinism."""
import json
import shutil

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import landscape.training as training
from landscape import LandscapeError
from landscape._base import derive_seed
from landscape.attacks import pgd
from landscape.checkpoints import load_checkpoint
from landscape.regularizers import advlc, input_gradient_penalty
from landscape.training import (METRIC_COLUMNS, checkpoint_path, evaluate, lam_at, list_checkpoints, lr_at,
                                prepare_data, seeded_model, train)

OFFICIAL_KEYS = {"epoch", "state_dict", "best_acc1", "best_pgd", "best_fgsm", "optimizer"}
TINY = dict(hidden=(12,))


def _data(n_train=48, n_test=40, seed=0):
    """Separable-ish 10-class 8x8 inputs in [0,1]: class c brightens pixel block c."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.arange(n) % 10
        x = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
        x.view(n, -1)[torch.arange(n), y * 6] += 0.6
        return x.clamp(0, 1), y

    return split(n_train), split(n_test)


def _train(tmp_path, name="run", **kw):
    args = dict(method="pgd_at", eps=0.1, steps=2, epochs=2, lr=0.05, batch_size=16, seed=0,
                eval_steps=2, progress=False, arch="mlp", arch_kwargs=TINY)
    args.update(kw)
    model = seeded_model("mlp", 0, **TINY)
    metrics = train(model, args.pop("data", _data()), out_dir=tmp_path / name, **args)
    return model, metrics


def test_lr_schedule_hand_values():
    kw = dict(lr=0.1, epochs=150)
    assert [lr_at(e, **kw) for e in (1, 75, 76, 112, 113, 150)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert lr_at(3, lr=0.2, epochs=4, milestones=()) == 0.2


def test_lambda_warmup_is_a_linear_ramp():
    assert [lam_at(e, lam=0.3, warmup=3) for e in (1, 2, 3, 10)] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert lam_at(1, lam=0.3, warmup=0) == 0.3


def test_label_noise_flips_requested_fraction_on_train_only():
    (x_tr, y_tr), (x_te, y_te) = _data(n_train=1000, n_test=200)
    (_, y_noisy), (x_te2, y_te2) = prepare_data(((x_tr, y_tr), (x_te, y_te)), label_noise=0.2,
                                                num_classes=10, seed=3)
    flipped = (y_noisy != y_tr).float().mean().item()
    assert abs(flipped - 0.2) < 0.04
    assert torch.equal(y_te2, y_te) and torch.equal(x_te2, x_te)
    assert y_noisy.min() >= 0 and y_noisy.max() < 10
    again = prepare_data(((x_tr, y_tr), (x_te, y_te)), label_noise=0.2, num_classes=10, seed=3)[0][1]
    assert torch.equal(again, y_noisy)  # seeded
    other = prepare_data(((x_tr, y_tr), (x_te, y_te)), label_noise=0.2, num_classes=10, seed=4)[0][1]
    assert not torch.equal(other, y_noisy)


def test_two_epoch_run_writes_advlc_checkpoints_metrics_and_settings(tmp_path):
    data = _data()
    model, metrics = _train(tmp_path, label_noise=0.25, data=data)
    out = tmp_path / "run"
    assert [e for e, _ in list_checkpoints(out)] == [1, 2]
    raw = torch.load(checkpoint_path(out, 2), weights_only=True)
    assert set(raw) >= OFFICIAL_KEYS and raw["epoch"] == 2 and raw["optimizer"]["state"]
    assert raw["best_fgsm"] is None
    ckpt = load_checkpoint(checkpoint_path(out, 2))
    assert ckpt.epoch == 2
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.state_dict[k], v)

    assert list(metrics.columns) == METRIC_COLUMNS
    assert metrics[["epoch", "split"]].values.tolist() == [[1, "train"], [1, "test"], [2, "train"], [2, "test"]]
    assert metrics.equals(pd.read_csv(out / "metrics.csv"))
    # best_pgd is the best test PGD accuracy so far, in percent (official convention)
    assert raw["best_pgd"] == pytest.approx(100 * metrics.loc[metrics.split == "test", "acc_adv"].max())

    # clean test numbers match a direct evaluation of the saved weights
    (x_te, y_te) = data[1]
    with torch.no_grad():
        logits = model.eval()(x_te)
    last = metrics[(metrics.epoch == 2) & (metrics.split == "test")].iloc[0]
    assert last.acc_clean == pytest.approx((logits.argmax(1) == y_te).float().mean().item())
    assert last.loss_clean == pytest.approx(F.cross_entropy(logits, y_te).item(), rel=1e-5)
    assert last.lr == pytest.approx(0.05 * 0.01)  # both milestones passed in a 2-epoch run

    settings = json.loads((out / "settings.json").read_text())
    assert settings["label_noise"] == 0.25 and settings["n_flipped"] == 12  # 25% of 48
    assert settings["arch"] == "mlp" and settings["arch_kwargs"] == {"hidden": [12]}
    assert settings["step_size"] == pytest.approx(2.5 * 0.1 / 2) and settings["lam"] == 0.0


def test_train_split_metrics_use_the_noisy_labels(tmp_path):
    data = _data()
    model, metrics = _train(tmp_path, label_noise=0.5, data=data, epochs=1)
    (_, y_noisy), _ = prepare_data(data, label_noise=0.5, num_classes=10, seed=0)
    with torch.no_grad():
        pred = model.eval()(data[0][0]).argmax(1)
    row = metrics[metrics.split == "train"].iloc[0]
    assert row.acc_clean == pytest.approx((pred == y_noisy).float().mean().item())


def test_trajectory_analysis_consumes_the_checkpoints(tmp_path):
    from landscape.data import load_dataset
    from landscape.trajectory import analyse_trajectory

    data = (load_dataset("digits", "train", n=40), load_dataset("digits", "test", n=40))
    _train(tmp_path, data=data)
    table = analyse_trajectory(tmp_path / "run", "mlp", "digits", out_dir=tmp_path / "analysis",
                               arch_kwargs=TINY, measures=["grad"], n=20, steps=2, progress=False)
    assert table["error"].isna().all()
    assert sorted(table["epoch"].unique().tolist()) == [1, 2]
    assert set(table["split"]) == {"train", "test"}


def test_resume_after_interruption_gives_the_same_weights(tmp_path, monkeypatch):
    full, full_metrics = _train(tmp_path, name="full", method="at_advlc", epochs=3, label_noise=0.2)

    real = training._train_epoch

    def crash_in_epoch_3(*args, epoch, **kw):
        if epoch == 3:
            raise KeyboardInterrupt
        return real(*args, epoch=epoch, **kw)

    monkeypatch.setattr(training, "_train_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, name="cut", method="at_advlc", epochs=3, label_noise=0.2)
    assert [e for e, _ in list_checkpoints(tmp_path / "cut")] == [1, 2]
    monkeypatch.setattr(training, "_train_epoch", real)

    resumed, resumed_metrics = _train(tmp_path, name="cut", method="at_advlc", epochs=3, label_noise=0.2)
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    cols = [c for c in METRIC_COLUMNS if c != "time_s"]
    pd.testing.assert_frame_equal(resumed_metrics[cols], full_metrics[cols])


def test_resume_from_a_lost_last_checkpoint_truncates_metrics(tmp_path):
    full, _ = _train(tmp_path, name="a", method="standard", epochs=3, eps=0.0)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    checkpoint_path(tmp_path / "b", 3).unlink()  # metrics.csv still holds epoch-3 rows
    again, metrics = _train(tmp_path, name="b", method="standard", epochs=3, eps=0.0)
    assert metrics["epoch"].tolist() == [1, 1, 2, 2, 3, 3]
    for k, v in full.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


def test_seed_determines_the_run_and_global_rng_is_untouched(tmp_path):
    state = torch.get_rng_state()
    a, _ = _train(tmp_path, name="a", epochs=1)
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = _train(tmp_path, name="b", epochs=1)
    c, _ = _train(tmp_path, name="c", epochs=1, seed=1)
    w = "net.1.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


@pytest.mark.parametrize("method", ["at_advlc", "at_gradreg"])
def test_objective_adds_the_regulariser_to_adversarial_ce(method):
    model = seeded_model("mlp", 1, **TINY).train()
    (x, y), _ = _data(n_train=16)
    kw = dict(eps=0.1, steps=3, step_size=0.05, top=0.1, grad_norm="l1", seed=5)
    got = training._objective(model, x, y, method=method, lam=0.7, **kw)
    x_adv, _ = pgd(model, x, y, 0.1, steps=3, step_size=0.05, seed=5, train_mode=True)
    ce = F.cross_entropy(model(x_adv), y)
    reg = advlc(model(x), model(x_adv)) if method == "at_advlc" else input_gradient_penalty(model, x, y)
    assert reg.item() > 0
    assert got.item() == pytest.approx((ce + 0.7 * reg).item(), rel=1e-6)
    plain = training._objective(model, x, y, method="pgd_at", lam=0.0, **kw)
    assert plain.item() == pytest.approx(ce.item(), rel=1e-6)


def test_evaluate_matches_direct_attack():
    model = seeded_model("mlp", 2, **TINY)
    (x, y), _ = _data(n_train=30)
    r = evaluate(model, x, y, eps=0.2, steps=3, batch_size=30, seed=0)
    x_adv, _ = pgd(model, x, y, 0.2, steps=3, seed=derive_seed(0, training._EVAL_ATTACK, 0))
    with torch.no_grad():
        acc = (model(x_adv).argmax(1) == y).float().mean().item()
    assert r["acc_adv"] == pytest.approx(acc)
    assert r["loss_adv"] >= r["loss_clean"]
    assert evaluate(model, x, y, eps=0.0)["acc_adv"] == pytest.approx(r["acc_clean"])


def test_caller_mode_restored_and_no_grad_left(tmp_path):
    model = seeded_model("mlp", 0, **TINY).eval()
    train(model, _data(), method="at_gradreg", eps=0.1, steps=1, epochs=1, out_dir=tmp_path / "m",
          progress=False, eval_steps=1)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("bad, match", [
    (dict(method="trades"), "standard, pgd_at, at_advlc, at_gradreg"),
    (dict(method="pgd_at", eps=0.0), "eps > 0"),
    (dict(label_noise=1.0), "label_noise"),
    (dict(epochs=0), "epochs"),
    (dict(lr_milestones=(0.75, 0.5)), "lr_milestones"),
    (dict(grad_norm="l3"), "l1, l2sq"),
    (dict(step_size=-1.0), "step_size"),
])
def test_bad_settings_are_refused(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        _train(tmp_path, **bad)


def test_existing_run_with_other_settings_is_not_overwritten(tmp_path):
    _train(tmp_path, epochs=1)
    with pytest.raises(LandscapeError, match="settings differ.*lr"):
        _train(tmp_path, epochs=1, lr=0.2)
    with pytest.raises(LandscapeError, match="resume=True"):
        _train(tmp_path, epochs=1, resume=False)


def test_diverging_run_is_a_one_line_error(tmp_path):
    with pytest.raises(LandscapeError, match="diverged at epoch 1"):
        _train(tmp_path, method="standard", eps=0.0, lr=1e38, momentum=0.0, epochs=1, lr_milestones=())


def test_train_cli_writes_a_run_and_maps_errors_to_exit_2(tmp_path, capsys):
    from landscape.cli import main

    out = tmp_path / "cli"
    args = ["train", "--quiet", "--data", "digits", "--arch", "mlp", "--arch-arg", "hidden=(12,)",
            "--method", "at_advlc", "--epochs", "2", "--train-n", "40", "--n", "30", "--steps", "2",
            "--eval-steps", "2", "--label-noise", "0.25", "--out", str(out)]
    assert main(args) == 0
    assert "best robust accuracy" in capsys.readouterr().out
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["method"], settings["lam"], settings["n_train"], settings["n_flipped"]) == \
        ("at_advlc", 0.3, 40, 10)
    assert settings["eval_n"] == 30 and settings["steps"] == 2 and settings["dataset"] == "digits"
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 1, 2, 2]
    # same command again: nothing left to do, same files
    assert main(args) == 0
    assert pd.read_csv(out / "metrics.csv").equals(metrics)

    assert main(args[:-1] + [str(tmp_path / "x"), "--attack", "fgsm"]) == 2
    assert main(args + ["--lr", "0.5"]) == 2  # settings differ from the run in `out`
    err = capsys.readouterr().err
    assert "pgd only" in err and "settings differ" in err and len(err.strip().splitlines()) == 2
