"""landscape.evaluate: official PGD-10, AutoAttack through pyautoattack, `landscape evaluate`, final_eval."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import pyautoattack
from landscape.testing import clean_trained_mlp
from landscape.attacks import AttackSettings
from landscape.cli import main
from landscape.evaluate import FINAL_EVAL_FILE, autoattack_correct, evaluate_model, final_eval, pgd_correct

HIDDEN = (32,)


@pytest.fixture(scope="module")
def digits():
    """A clean-trained MLP on digits (accurate, not robust) and 30 stratified test samples."""
    from landscape.datasets import load_dataset

    x_tr, y_tr = load_dataset("digits", "train")
    x, y = load_dataset("digits", "test", n=30)
    model = clean_trained_mlp(x_tr, y_tr, hidden=HIDDEN)
    return model.eval(), x, y


def _reference_official_pgd(model, x, y, eps):
    """PGD-10, step eps/4, no random start, L∞, written independently: 10 signed-gradient steps."""
    delta = torch.zeros_like(x)
    for _ in range(10):
        d = delta.clone().requires_grad_(True)
        loss = F.cross_entropy(model(x + d), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, d)
        delta = (delta + eps / 4 * g.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    with torch.no_grad():
        return model(x + delta).argmax(1) == y


class _Spy:
    """Wraps pyautoattack.AutoAttack's methods to record that the package's own code ran."""

    def __init__(self, monkeypatch):
        self.instances, self.results = [], []
        init, run = pyautoattack.AutoAttack.__init__, pyautoattack.AutoAttack.run_standard_evaluation
        spy = self

        def spy_init(self_, *a, **kw):
            init(self_, *a, **kw)
            spy.instances.append(self_)

        def spy_run(self_, *a, **kw):
            out = run(self_, *a, **kw)
            spy.results.append((a, out))
            return out

        monkeypatch.setattr(pyautoattack.AutoAttack, "__init__", spy_init)
        monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", spy_run)


def test_official_settings_and_pgd_against_an_independent_implementation(digits):
    model, x, y = digits
    s = AttackSettings.official(0.1)
    assert (s.attack, s.steps, s.step_size, s.random_start, s.norm) == ("pgd", 10, 0.025, False, "linf")
    ours = pgd_correct(model, x, y, eps=0.1, batch_size=7)  # batching must not matter without a random start
    assert torch.equal(ours, _reference_official_pgd(model, x, y, 0.1))
    row = evaluate_model(model, x, y, eps=0.1)
    assert row["acc_pgd"] == pytest.approx(float(ours.double().mean()))
    assert row["pgd_steps"] == 10 and row["pgd_step_size"] == pytest.approx(0.025) and not row["pgd_random_start"]
    with torch.no_grad():
        assert row["acc_clean"] == pytest.approx(float((model(x).argmax(1) == y).double().mean()))
    assert "acc_autoattack" not in row


def test_autoattack_runs_the_package_and_is_at_least_as_strong(digits, monkeypatch):
    model, x, y = digits
    spy = _Spy(monkeypatch)
    eps = 0.06
    rng = torch.get_rng_state()
    row = evaluate_model(model, x, y, attack="autoattack", eps=eps, version="custom",
                         aa_attacks=["apgd-ce", "apgd-t"], seed=1)
    assert torch.equal(torch.get_rng_state(), rng)  # the package seeds the global RNG; we restore it
    assert len(spy.instances) == 1 and spy.instances[0].attacks_to_run == ["apgd-ce", "apgd-t"]
    (args, (x_adv, _)), = spy.results
    assert torch.equal(args[0], x) and (x_adv - x).abs().max() <= eps + 1e-6
    with torch.no_grad():  # our accuracy is read off the package's adversarial inputs
        assert row["acc_autoattack"] == pytest.approx(float((model(x_adv).argmax(1) == y).double().mean()))
    assert row["acc_autoattack"] <= row["acc_pgd"] <= row["acc_clean"]
    assert row["acc_pgd"] < row["acc_clean"]  # the attack is not a no-op at this eps
    assert row["autoattack_version"] == "custom:apgd-ce+apgd-t"
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_standard_autoattack_is_the_default(digits, monkeypatch):
    model, x, y = digits
    spy = _Spy(monkeypatch)
    x, y = x[:6], y[:6]
    eps = 0.3  # large: APGD-CE breaks everything, the package then skips the remaining attacks
    correct = autoattack_correct(model, x, y, eps=eps)
    aa = spy.instances[0]
    assert aa.version == "standard" and aa.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa.norm == "Linf" and aa.epsilon == eps and aa.seed == 0
    assert correct.dtype == torch.bool and correct.shape == (6,)
    assert int(correct.sum()) <= int(pgd_correct(model, x, y, eps=eps).sum())


def test_autoattack_argument_errors(digits):
    model, x, y = digits
    with pytest.raises(ValueError, match="8/255 = 0.0314"):
        autoattack_correct(model, x, y, eps=8)
    with pytest.raises(ValueError, match="version"):
        autoattack_correct(model, x, y, eps=0.1, version="fast")
    with pytest.raises(ValueError, match="custom"):
        autoattack_correct(model, x, y, eps=0.1, attacks=["apgd-ce"])
    with pytest.raises(ValueError, match="evaluation attack"):
        evaluate_model(model, x, y, attack="cw", eps=0.1)


def _checkpoints(tmp_path, model, epochs):
    from landscape.checkpoints import save_checkpoint

    paths = []
    for e in epochs:
        paths.append(save_checkpoint(tmp_path / f"model_e{e:03d}.pt", model, epoch=e))
    return paths


def _evaluate_argv(paths, out, *, n, eps, extra=()):
    return ["evaluate", *map(str, paths), "--arch", "mlp", "--arch-arg", f"hidden={HIDDEN}", "--arch-arg",
            "activation='softplus'", "--data", "digits", "--n", str(n), "--eps", str(eps), "--out", str(out),
            "--quiet", *extra]


def test_evaluate_command_one_row_per_checkpoint(digits, tmp_path, capsys):
    from landscape.datasets import load_dataset

    model, _, _ = digits
    paths = _checkpoints(tmp_path, model, [1, 2])
    out = tmp_path / "eval.csv"
    assert main(_evaluate_argv(paths, out, n=30, eps=0.1)) == 0
    table = pd.read_csv(out)
    assert table["checkpoint"].tolist() == [str(p) for p in paths] and table["epoch"].tolist() == [1, 2]
    assert {"acc_clean", "acc_pgd", "eps", "norm", "pgd_steps", "pgd_step_size", "data", "split"} <= set(table.columns)
    assert "acc_autoattack" not in table.columns
    x, y = load_dataset("digits", "test", n=30)
    direct = evaluate_model(model, x, y, eps=0.1)
    np.testing.assert_allclose(table["acc_pgd"], direct["acc_pgd"])
    np.testing.assert_allclose(table["acc_clean"], direct["acc_clean"])
    assert "wrote" in capsys.readouterr().out
    # AutoAttack from the CLI: standard version, a handful of samples, an eps that breaks them at once
    out_aa = tmp_path / "eval.parquet"
    assert main(_evaluate_argv(paths[:1], out_aa, n=4, eps=0.3, extra=["--attack", "autoattack"])) == 0
    aa = pd.read_parquet(out_aa)
    assert (aa["acc_autoattack"] <= aa["acc_pgd"]).all() and (aa["acc_pgd"] <= aa["acc_clean"]).all()
    assert (aa["autoattack_version"] == "standard").all()


def test_evaluate_command_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse: one line, exit 2
        main(["evaluate", "x.pt", "--arch", "mlp", "--eps", "8", "--out", str(tmp_path / "a.csv")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "8/255 = 0.0314" in err and len(err.strip().splitlines()) == 1
    assert main(["evaluate", str(tmp_path / "missing.pt"), "--arch", "mlp", "--out", str(tmp_path / "a.csv")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["evaluate", "x.pt", "--arch", "mlp", "--out", str(tmp_path / "a.txt")]) == 2


def test_final_eval_best_and_last_by_the_official_rule(digits, tmp_path):
    model, x, y = digits
    paths = _checkpoints(tmp_path, model, [1, 2, 3])
    # analysed subset: tie between epochs 1 and 2 -> the latest (2) is best; the log (when given) says 1
    table = pd.DataFrame({"epoch": [1, 2, 3], "split": "test", "acc_adv": [0.5, 0.5, 0.4],
                          "checkpoint": [str(p) for p in paths], "error": None})

    def load(path):
        from landscape.checkpoints import load_checkpoint, load_model

        ckpt = load_checkpoint(path)
        return load_model(ckpt, "mlp", hidden=HIDDEN, activation="softplus"), ckpt.epoch

    result = final_eval(table, tmp_path, load, x, y, eps=0.1)
    written = pd.read_csv(tmp_path / FINAL_EVAL_FILE)
    assert written["which"].tolist() == ["best", "last"] and written["epoch"].tolist() == [2, 3]
    assert written["checkpoint"].tolist() == [str(paths[1]), str(paths[2])]
    assert written["best_source"].str.startswith("analysed").all()
    direct = evaluate_model(model, x, y, eps=0.1)
    np.testing.assert_allclose(result["acc_pgd"], direct["acc_pgd"])
    log = pd.DataFrame({"epoch": [1, 2, 3], "split": "test", "acc_adv": [0.6, 0.5, 0.4]})
    by_log = final_eval(table, tmp_path, load, x, y, eps=0.1, log=log)
    assert by_log["epoch"].tolist() == [1, 3] and by_log["best_source"].str.startswith("training log").all()
    one = final_eval(table[table["epoch"] < 3], tmp_path, load, x, y, eps=0.1)
    assert one["which"].tolist() == ["best,last"] and one["epoch"].tolist() == [2]


def test_trajectory_command_final_eval(digits, tmp_path, capsys):
    model, _, _ = digits
    ckpts = tmp_path / "run"
    _checkpoints(ckpts, model, [1, 2])
    out = tmp_path / "run" / "analysis"
    argv = ["trajectory", str(ckpts), "--arch", "mlp", "--arch-arg", f"hidden={HIDDEN}", "--arch-arg",
            "activation='softplus'", "--data", "digits", "--n", "10", "--splits", "test", "--measures", "grad",
            "--steps", "2", "--out", str(out), "--final-eval", "pgd", "--final-eval-n", "20", "--quiet"]
    assert main(argv) == 0
    fe = pd.read_csv(out / FINAL_EVAL_FILE)
    assert set(fe["epoch"]) <= {1, 2} and fe["acc_pgd"].notna().all() and (fe["n"] == 20).all()
    assert "final eval" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- --eps and sanity flags

@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("0.1", 0.1), (" 1 / 10 ", 0.1), ("0", 0.0),
                                         ("4/255", 4 / 255)])
def test_eps_accepts_numbers_and_fractions(text, value):
    from landscape.commands._common import eps_value

    assert eps_value(text) == pytest.approx(value, abs=0, rel=1e-15)


@pytest.mark.parametrize("command", ["evaluate", "measure", "trajectory", "slice", "train"])
@pytest.mark.parametrize("bad", ["8/0", "abc", "-0.1", "-8/255", "8/255/2", "nan", "8"])
def test_bad_eps_is_one_line_exit_2_naming_the_flag(command, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, f"--eps={bad}"])  # (``--eps -8/255`` fails too: argparse reads it as an option)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "argument --eps" in err
    assert "8/255 = 0.0314" in err if bad == "8" else repr(bad) in err


QUANT_ARCH = f'''
import torch
import torch.nn as nn
from landscape import create_model


class QuantMLP(nn.Module):
    """The test MLP behind a 4-level input quantisation: zero input gradients (masked)."""

    def __init__(self):
        super().__init__()
        self.net = create_model("mlp", hidden={HIDDEN!r}, activation="softplus")

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)
'''


def test_evaluate_command_flags_a_masked_model_and_passes_an_honest_one(digits, tmp_path, capsys):
    from landscape.checkpoints import save_checkpoint

    model, _, _ = digits
    honest = _checkpoints(tmp_path, model, [1])
    arch = tmp_path / "quant_arch.py"
    arch.write_text(QUANT_ARCH)
    masked_model = torch.nn.Module()
    masked_model.net = model
    masked = save_checkpoint(tmp_path / "quant.pt", masked_model, epoch=1)
    out = tmp_path / "honest.csv"
    assert main(_evaluate_argv(honest, out, n=60, eps="8/255", extra=["--square-queries", "300"])) == 0
    text = capsys.readouterr().out
    assert "sanity flags on 60 samples: none" in text and "FLAG" not in text
    row = pd.read_csv(out).iloc[0]
    assert row["eps"] == pytest.approx(8 / 255) and not row["flagged"] and row["square_n"] == 60
    assert row["acc_pgd"] <= row["acc_fgsm"] <= row["acc_clean"]
    assert "eps 0.0313725 = 8/255 (from --eps)" in text
    out_m = tmp_path / "masked.parquet"
    argv = ["evaluate", str(masked), "--arch", f"{arch}:QuantMLP", "--data", "digits", "--n", "60", "--eps", "1/10",
            "--out", str(out_m), "--quiet", "--square-n", "50", "--square-queries", "300", "--attack", "autoattack",
            "--aa-attacks", "apgd-ce"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "SOME FLAGGED" in text and "FLAG zero_grad" in text and "FLAG square" in text and "FLAG landscape" in text
    m = pd.read_parquet(out_m).iloc[0]
    assert m["flagged"] and m["flag_zero_grad"] and m["zero_grad_frac"] == 1.0 and m["flag_square"]
    assert m["acc_pgd"] == m["acc_fgsm"] == m["acc_clean"]  # the white-box attacks cannot move
    assert m["acc_square"] < m["acc_whitebox_sub"] and m["autoattack_version"] == "custom:apgd-ce"
    with pytest.raises(SystemExit) as exc:
        main(argv[:-1] + ["apgd-xx"])
    assert exc.value.code == 2 and "--aa-attacks" in capsys.readouterr().err
