"""Training loops: schedules, label noise, checkpoints in the AdvLC format, resume, determinism."""
import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import landscape.training as training
from landscape import LandscapeError
from landscape._base import derive_seed
from landscape.attacks import pgd
from landscape.checkpoints import load_checkpoint
from landscape.objectives import batch_loss
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
    assert set(raw) >= OFFICIAL_KEYS and raw["epoch"] == 2
    assert raw["best_fgsm"] is None and raw["optimizer"] is None  # weights only
    assert not (out / "resume.pt").exists()  # a complete run keeps no optimizer state
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
    from landscape.datasets import load_dataset
    from landscape.trajectory import analyse_trajectory

    data = (load_dataset("digits", "train", n=40), load_dataset("digits", "test", n=40))
    _train(tmp_path, data=data)
    table = analyse_trajectory(tmp_path / "run", "mlp", "digits", out_dir=tmp_path / "analysis",
                               arch_kwargs=TINY, measures=["grad"], n=20, steps=2, progress=False)
    assert table["error"].isna().all()
    assert sorted(table["epoch"].unique().tolist()) == [1, 2]
    assert set(table["split"]) == {"train", "test"}


def _interrupt_epoch(monkeypatch, at: int):
    """Make training raise KeyboardInterrupt when it starts epoch ``at``; returns the real epoch function."""
    real = training._train_epoch

    def crash(*args, epoch: int, **kw):
        if epoch == at:
            raise KeyboardInterrupt
        return real(*args, epoch=epoch, **kw)

    monkeypatch.setattr(training, "_train_epoch", crash)
    return real


def test_resume_after_interruption_gives_the_same_weights(tmp_path, monkeypatch):
    full, full_metrics = _train(tmp_path, name="full", method="at_advlc", epochs=3, label_noise=0.2)

    real = _interrupt_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, name="cut", method="at_advlc", epochs=3, label_noise=0.2)
    assert [e for e, _ in list_checkpoints(tmp_path / "cut")] == [1, 2]
    state = torch.load(tmp_path / "cut" / "resume.pt", weights_only=True)
    assert state["epoch"] == 2 and state["optimizer"]["state"]  # momentum buffers kept for resuming
    monkeypatch.setattr(training, "_train_epoch", real)

    resumed, resumed_metrics = _train(tmp_path, name="cut", method="at_advlc", epochs=3, label_noise=0.2)
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    cols = [c for c in METRIC_COLUMNS if c != "time_s"]
    pd.testing.assert_frame_equal(resumed_metrics[cols], full_metrics[cols])
    assert not (tmp_path / "cut" / "resume.pt").exists()


def test_resume_after_a_crash_between_checkpoint_and_resume_state(tmp_path, monkeypatch):
    """Killed after epoch 3's checkpoint and metrics but before its resume state: epoch 3 is redone."""
    full, _ = _train(tmp_path, name="a", method="standard", epochs=4, eps=0.0)
    real = torch.save

    def crash_on_resume_state_of_epoch_3(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("epoch") == 3 and "swa" in obj:
            raise KeyboardInterrupt
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", crash_on_resume_state_of_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, name="b", method="standard", epochs=4, eps=0.0)
    monkeypatch.setattr(torch, "save", real)
    assert pd.read_csv(tmp_path / "b" / "metrics.csv")["epoch"].max() == 3  # rows beyond the resume point
    assert torch.load(tmp_path / "b" / "resume.pt", weights_only=True)["epoch"] == 2
    again, metrics = _train(tmp_path, name="b", method="standard", epochs=4, eps=0.0)
    assert metrics["epoch"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
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
    got = batch_loss(model, x, y, method=method, lam=0.7, **kw)
    x_adv, _ = pgd(model, x, y, 0.1, steps=3, step_size=0.05, seed=5, train_mode=True)
    ce = F.cross_entropy(model(x_adv), y)
    reg = advlc(model(x), model(x_adv)) if method == "at_advlc" else input_gradient_penalty(model, x, y)
    assert reg.item() > 0
    assert got.item() == pytest.approx((ce + 0.7 * reg).item(), rel=1e-6)
    plain = batch_loss(model, x, y, method="pgd_at", lam=0.0, **kw)
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
    (dict(method="trade"), "standard, standard_gradreg, pgd_at, at_decomposed, at_advlc, at_gradreg, trades"),
    (dict(method="trades", eps=0.0), "eps > 0"),
    (dict(pgd_start="middle"), "clean, random, grad"),
    (dict(method="awp_at", awp_gamma=-1.0), "awp_gamma"),
    (dict(method="pgd_at", eps=0.0), "eps > 0"),
    (dict(label_noise=1.0), "label_noise"),
    (dict(epochs=0), "epochs"),
    (dict(lr_milestones=(0.75, 0.5)), "lr_milestones"),
    (dict(grad_norm="l3"), "l1, l2sq"),
    (dict(step_size=-1.0), "step_size"),
    (dict(method="at_decomposed", eps=0.0), "eps > 0"),
    (dict(clean_weight=-1.0), "clean_weight"),
    (dict(augment="rotate"), "none, crop, crop_flip"),
    (dict(small_eps=0.0), "small_eps"),
    (dict(swa_start=5), "swa_start"),
    (dict(save_every=0), "save_every"),
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


# ---------------------------------------------------------------------------- objectives isolating causes
def _grads(model, loss):
    return [g.clone() for g in torch.autograd.grad(loss, list(model.parameters()))]


def test_decomposed_objective_is_clean_term_plus_weighted_excess():
    model = seeded_model("mlp", 1, **TINY).train()
    (x, y), _ = _data(n_train=16)
    kw = dict(eps=0.1, steps=3, step_size=0.05, random_start=False)
    x_adv, _ = pgd(model, x, y, 0.1, steps=3, step_size=0.05, random_start=False, train_mode=True)
    l_adv, l_clean = F.cross_entropy(model(x_adv), y), F.cross_entropy(model(x), y)
    assert l_adv.item() > l_clean.item()
    # w_c = w_e = 1 is PGD-AT: same value and same parameter gradient
    at = batch_loss(model, x, y, method="pgd_at", **kw)
    both = batch_loss(model, x, y, method="at_decomposed", clean_weight=1.0, excess_weight=1.0, **kw)
    assert both.item() == pytest.approx(at.item(), rel=1e-6)
    for a, b in zip(_grads(model, at), _grads(model, both)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    excess = batch_loss(model, x, y, method="at_decomposed", clean_weight=0.0, excess_weight=1.0, **kw)
    assert excess.item() == pytest.approx((l_adv - l_clean).item(), rel=1e-5)
    clean = batch_loss(model, x, y, method="at_decomposed", clean_weight=1.0, excess_weight=0.0, **kw)
    assert clean.item() == pytest.approx(l_clean.item(), rel=1e-6)
    mixed = batch_loss(model, x, y, method="at_decomposed", clean_weight=0.5, excess_weight=2.0, **kw)
    assert mixed.item() == pytest.approx((0.5 * l_clean + 2.0 * (l_adv - l_clean)).item(), rel=1e-5)


def test_standard_gradreg_is_clean_ce_plus_per_sample_gradient_norm():
    model = seeded_model("mlp", 2, **TINY).train()
    (x, y), _ = _data(n_train=8)
    got = batch_loss(model, x, y, method="standard_gradreg", lam=0.3, grad_norm="l2sq")
    # independent reference: one sample at a time
    norms = []
    for i in range(8):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xi), y[i:i + 1]), xi, create_graph=True)
        norms.append(g.pow(2).sum())
    want = F.cross_entropy(model(x), y) + 0.3 * torch.stack(norms).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    gw, ww = _grads(model, got), _grads(model, want)
    for a, b in zip(gw, ww):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


class _Recorder(torch.nn.Module):
    """Wraps a model and records, per forward call, whether its input was the clean batch."""

    def __init__(self, model, x):
        super().__init__()
        self.model, self.x, self.calls = model, x, []

    def forward(self, inp):
        self.calls.append(bool(torch.equal(inp.detach(), self.x)))
        return self.model(inp)


@pytest.mark.parametrize("method", ["pgd_at", "at_advlc"])
def test_clean_first_runs_the_clean_forward_before_the_attack(method):
    (x, y), _ = _data(n_train=8)
    rec = _Recorder(seeded_model("mlp", 0, **TINY).train(), x)
    kw = dict(method=method, eps=0.1, steps=2, lam=0.3, random_start=False)
    first = batch_loss(rec, x, y, clean_first=True, **kw)
    assert rec.calls[0] is True and rec.calls[-1] is False  # clean pass first, adversarial pass last
    rec.calls.clear()
    later = batch_loss(rec, x, y, clean_first=False, **kw)
    # without BN the order does not change the loss; the official order is only about BN statistics
    assert first.item() == pytest.approx(later.item(), rel=1e-6)
    assert rec.calls[-1] is (method == "at_advlc")  # AdvLC's clean pass after the attack


def test_random_start_off_makes_the_training_attack_seed_free():
    model = seeded_model("mlp", 3, **TINY).train()
    (x, y), _ = _data(n_train=8)
    a = batch_loss(model, x, y, method="pgd_at", eps=0.1, steps=2, random_start=False, seed=1)
    b = batch_loss(model, x, y, method="pgd_at", eps=0.1, steps=2, random_start=False, seed=2)
    c = batch_loss(model, x, y, method="pgd_at", eps=0.1, steps=2, random_start=True, seed=1)
    x_adv, _ = pgd(model, x, y, 0.1, steps=2, random_start=False, train_mode=True)
    assert a.item() == b.item() == pytest.approx(F.cross_entropy(model(x_adv), y).item(), rel=1e-6)
    assert c.item() != a.item()


# ---------------------------------------------------------------------------- protocol options and files
def test_small_eps_columns_match_a_direct_evaluation(tmp_path):
    data = _data()
    model, metrics = _train(tmp_path, method="standard_gradreg", eps=0.1, small_eps=0.02, lam=0.05)
    assert list(metrics.columns) == METRIC_COLUMNS + ["acc_adv_small", "loss_adv_small"]
    last = metrics[(metrics.epoch == 2) & (metrics.split == "test")].iloc[0]
    order = training._eval_subset(40, None, 0)  # the test split in the run's evaluation order
    direct = evaluate(model, data[1][0][order], data[1][1][order], eps=0.02, steps=2, seed=0)
    assert last.acc_adv_small == pytest.approx(direct["acc_adv"])
    assert last.loss_adv_small == pytest.approx(direct["loss_adv"], rel=1e-5)
    assert last.loss_clean <= last.loss_adv_small <= last.loss_adv
    assert metrics[metrics.split == "train"]["acc_adv_small"].isna().all()  # test split only


def test_save_every_keeps_first_every_kth_last_and_best(tmp_path):
    model, metrics = _train(tmp_path, method="standard", eps=0.05, epochs=7, save_every=3, lr=0.2)
    test = metrics[metrics.split == "test"]
    best = int(test[test.acc_adv == test.acc_adv.max()].epoch.max())  # latest epoch on ties
    kept = [e for e, _ in list_checkpoints(tmp_path / "run")]
    assert kept == sorted({1, 3, 6, 7, best})
    for e, path in list_checkpoints(tmp_path / "run"):
        raw = torch.load(path, weights_only=True)
        assert raw["optimizer"] is None and raw["epoch"] == e
    # the same run with every checkpoint: the kept files hold the same weights
    _, _ = _train(tmp_path, name="all", method="standard", eps=0.05, epochs=7, lr=0.2)
    for e in kept:
        a = torch.load(checkpoint_path(tmp_path / "run", e), weights_only=True)["state_dict"]
        b = torch.load(checkpoint_path(tmp_path / "all", e), weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_swa_is_the_mean_of_the_weights_at_the_averaging_points(tmp_path):
    data = _data()
    _, metrics = _train(tmp_path, method="pgd_at", epochs=3, swa_start=2, data=data)
    ws = [torch.load(checkpoint_path(tmp_path / "run", e), weights_only=True)["state_dict"] for e in (2, 3)]
    swa = torch.load(tmp_path / "run" / "model_swa.pt", weights_only=True)
    assert swa["epoch"] == 3 and swa["n_averaged"] == 2
    for k in ws[0]:
        torch.testing.assert_close(swa["state_dict"][k], (ws[0][k] + ws[1][k]) / 2)
    rows = metrics[metrics.split == "test_swa"]
    assert rows.epoch.tolist() == [2, 3]
    averaged = seeded_model("mlp", 0, **TINY)
    averaged.load_state_dict(swa["state_dict"])
    order = training._eval_subset(40, None, 0)
    direct = evaluate(averaged, data[1][0][order], data[1][1][order], eps=0.1, steps=2, seed=0)
    assert rows.iloc[-1].acc_adv == pytest.approx(direct["acc_adv"])


def test_augmented_drop_last_run_resumes_bitwise(tmp_path, monkeypatch):
    kw = dict(method="at_advlc", epochs=3, augment="crop", crop_pad=1, drop_last=True, batch_size=20,
              random_start=False, clean_first=True, swa_start=2)
    full, _ = _train(tmp_path, name="full", **kw)
    real = _interrupt_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, name="cut", **kw)
    monkeypatch.setattr(training, "_train_epoch", real)
    again, _ = _train(tmp_path, name="cut", **kw)
    for k, v in full.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    a = torch.load(tmp_path / "full" / "model_swa.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "model_swa.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    settings = json.loads((tmp_path / "full" / "settings.json").read_text())
    assert (settings["augment"], settings["drop_last"], settings["random_start"]) == ("crop", True, False)


def test_official_preset_is_accepted_by_train_and_matches_the_official_configuration():
    import inspect

    p = training.preset("official_cifar10")
    assert set(p) <= set(inspect.signature(train).parameters)
    assert (p["eps"], p["step_size"], p["steps"]) == (8 / 255, 2 / 255, 10)
    assert (p["epochs"], p["batch_size"], p["weight_decay"], p["lr"]) == (200, 100, 1e-4, 0.1)
    assert [int(f * p["epochs"]) for f in p["lr_milestones"]] == [100, 150]
    assert p["random_start"] is False and p["clean_first"] and p["augment"] == "crop_flip"
    assert p["pgd_start"] == "grad"  # the official loop's actual start: x + grad_x(batch-mean CE)
    swa = training.preset("official_cifar10_swa")
    assert (swa["lam"], swa["swa_start"], swa["swa_every"]) == (0.4, 51, 500)
    p["epochs"] = 1
    assert training.preset("official_cifar10")["epochs"] == 200  # a copy
    with pytest.raises(ValueError, match="official_cifar10"):
        training.preset("rice2020")


def test_train_cli_preset_with_explicit_overrides(tmp_path, capsys):
    from landscape.cli import main

    out = tmp_path / "official"
    assert main(["train", "--quiet", "--data", "digits", "--arch", "mlp", "--arch-arg", "hidden=(12,)",
                 "--preset", "official_cifar10", "--method", "at_advlc", "--epochs", "1", "--batch-size", "20",
                 "--train-n", "40", "--n", "20", "--steps", "1", "--eval-steps", "1", "--small-eps", "0.01",
                 "--out", str(out)]) == 0
    s = json.loads((out / "settings.json").read_text())
    assert (s["random_start"], s["clean_first"], s["augment"], s["drop_last"]) == (False, True, "crop_flip", True)
    assert (s["weight_decay"], s["eps"], s["step_size"]) == (1e-4, 8 / 255, 2 / 255)  # from the preset
    assert (s["epochs"], s["batch_size"], s["steps"], s["small_eps"]) == (1, 20, 1, 0.01)  # explicit wins
    assert s["lam"] == 0.3 and s["method"] == "at_advlc" and s["pgd_start"] == "grad"
    clean = tmp_path / "official_clean"
    assert main(["train", "--quiet", "--data", "digits", "--arch", "mlp", "--arch-arg", "hidden=(12,)",
                 "--preset", "official_cifar10", "--method", "at_advlc", "--epochs", "1", "--batch-size", "20",
                 "--train-n", "40", "--n", "20", "--steps", "1", "--eval-steps", "1", "--pgd-start", "clean",
                 "--out", str(clean)]) == 0
    assert json.loads((clean / "settings.json").read_text())["pgd_start"] == "clean"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--quiet", "--data", "digits", "--arch", "mlp", "--preset", "rice", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "official_cifar10" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["training", "objectives", "protocol", "augmentation", "regularizers",
                                    "study/experiments", "study/claims", "study/docblocks", "_version"])
def test_module_does_not_import_the_package_root(module):
    """Library modules import siblings only (``from .x import y``), never ``landscape`` itself."""
    import ast
    from pathlib import Path

    import landscape

    path = Path(landscape.__file__).parent / f"{module}.py"
    files = [path] if path.exists() else sorted(path.with_suffix("").glob("*.py"))  # a module or a package
    for node in (n for f in files for n in ast.walk(ast.parse(f.read_text()))):
        if isinstance(node, ast.ImportFrom):
            assert not (node.level == 1 and node.module is None), f"{module}: from . import ..."
            assert not (node.level == 0 and node.module == "landscape"), f"{module}: from landscape import ..."
        if isinstance(node, ast.Import):
            assert all(a.name != "landscape" for a in node.names), f"{module}: import landscape"


@pytest.mark.parametrize("method", ["trades", "mart", "awp_at", "awp_trades", "cure", "llr"])
def test_similar_methods_train_with_their_published_defaults_and_resume(tmp_path, method):
    from landscape.objectives import DEFAULT_LAM, DEFAULT_PARAMS

    _, metrics = _train(tmp_path, method=method, epochs=1)
    s = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert s["lam"] == DEFAULT_LAM[method]
    for key, table in DEFAULT_PARAMS.items():
        assert s[key] == table.get(method)  # recorded for the methods that use it, None for the others
    assert metrics["acc_adv"].notna().all()
    _, again = _train(tmp_path, method=method, epochs=1)  # the finished run is found, not retrained
    assert again.equals(metrics)


def test_train_cli_trains_a_similar_method(tmp_path):
    from landscape.cli import main

    out = tmp_path / "cli_awp"
    assert main(["train", "--quiet", "--data", "digits", "--arch", "mlp", "--arch-arg", "hidden=(12,)",
                 "--method", "awp_trades", "--awp-gamma", "0.01", "--epochs", "1", "--train-n", "40", "--n", "20",
                 "--steps", "1", "--eval-steps", "1", "--out", str(out)]) == 0
    s = json.loads((out / "settings.json").read_text())
    assert (s["method"], s["awp_gamma"], s["lam"], s["cure_h"]) == ("awp_trades", 0.01, 6.0, None)
