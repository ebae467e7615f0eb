"""landscape.masking: the sanity flags, on deliberately masked models and on honest ones (digits MLPs)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape._base import per_sample_loss
from landscape.attacks import AttackSettings, run_attack
from landscape.evaluate import evaluate_model
from landscape.testing import NanGrad, Noisy, Quantised, Softmax, clean_trained_mlp
from landscape.masking import (FLAGS, flag_lines, flag_table, gradient_check, landscape_check, masking_checks,
                               probability_check, randomness_check, square_check)

EPS = 0.1
HIDDEN = (32,)
SQUARE = {"square_n": 50, "square_queries": 300}  # Square's budget in these tests: a few seconds on CPU


def _trained_mlp() -> nn.Module:
    """A clean-trained softplus MLP on digits: accurate, not robust, honest (no masking)."""
    from landscape.datasets import load_dataset

    x_tr, y_tr = load_dataset("digits", "train")
    model = clean_trained_mlp(x_tr, y_tr, hidden=HIDDEN)
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    from landscape.datasets import load_dataset

    x, y = load_dataset("digits", "test", n=60)
    return _trained_mlp(), x, y


@pytest.fixture(scope="module")
def honest_row(digits):
    model, x, y = digits
    return masking_checks(model, x, y, eps=EPS, **SQUARE)


@pytest.fixture(scope="module")
def quantised_row(digits):
    model, x, y = digits
    return masking_checks(Quantised(model), x, y, eps=EPS, **SQUARE)


# ------------------------------------------------------------------------------------- (d) the honest model

def test_honest_model_raises_no_flag(honest_row):
    row = honest_row
    assert not row["flagged"] and not any(row[f.column] for f in FLAGS.values())
    assert row["zero_grad_frac"] == 0 and row["nan_grad_frac"] == 0
    assert row["rand_max_diff"] == 0 and not row["rand_pred_changed"]
    assert row["prob_frac"] == 0 and row["logprob_frac"] == 0
    assert row["acc_square"] > row["acc_whitebox_sub"]  # the black box is the weaker attack on an honest model
    assert row["square_gap"] < 0
    assert 0 < row["taylor_ratio"] < 0.3  # random vertices are a far weaker search than PGD
    assert row["pgd_increase_mean"] > 1  # PGD raises the loss by nats on a non-robust model


def test_checks_leave_model_and_global_rng_untouched(digits):
    model, x, y = digits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    model.train()
    masking_checks(Noisy(model), x[:20], y[:20], eps=EPS, square_n=10, square_queries=20)
    assert torch.equal(torch.get_rng_state(), rng)  # Square and the noisy passes seed/consume their own RNG
    assert model.training
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------- (a) zero / NaN gradients

def test_quantised_input_has_zero_gradients(digits, quantised_row):
    model, x, y = digits
    assert quantised_row["zero_grad_frac"] == 1.0 and quantised_row["flag_zero_grad"]
    assert gradient_check(model, x, y) == {"zero_grad_frac": 0.0, "nan_grad_frac": 0.0, "flag_zero_grad": False}
    # one zero-gradient sample of 60 (1.7%) is above the 1% tolerance; the threshold is a parameter
    assert gradient_check(Quantised(model), x[:1], y[:1], max_fraction=0.5)["flag_zero_grad"]


def test_nan_gradients_are_flagged(digits):
    model, x, y = digits
    with torch.no_grad():
        assert torch.isfinite(NanGrad(model)(x)).all()
    row = gradient_check(NanGrad(model), x, y)
    assert row["nan_grad_frac"] == 1.0 and row["zero_grad_frac"] == 0.0 and row["flag_zero_grad"]
    full = masking_checks(NanGrad(model), x, y, eps=EPS, square=False)  # NaN PGD points do not break the checks
    assert full["flag_zero_grad"] and full["pgd_increase_mean"] == 0.0
    assert math.isnan(full["taylor_gap_mean"]) and not full["flag_landscape"]  # a NaN gradient has no Taylor gap


# ------------------------------------------------------------------------------------- (b) probabilities

def test_probability_outputs_are_flagged(digits):
    model, x, _ = digits
    soft = probability_check(Softmax(model), x)
    assert soft["prob_frac"] == 1.0 and soft["flag_probabilities"]
    log = probability_check(Softmax(model, log=True), x)
    assert log["logprob_frac"] == 1.0 and log["prob_frac"] == 0.0 and log["flag_probabilities"]
    assert probability_check(model, x) == {"prob_frac": 0.0, "logprob_frac": 0.0, "flag_probabilities": False}


def test_softmax_model_in_full_checks(digits):
    model, x, y = digits
    row = masking_checks(Softmax(model), x, y, eps=EPS, square=False)
    assert row["flagged"] and row["flag_probabilities"]
    assert [f for f in FLAGS if row[FLAGS[f].column]] == ["probabilities"]
    assert row["square_n"] == 0 and math.isnan(row["acc_square"])


# ------------------------------------------------------------------------------------- (c) randomised outputs

def test_randomised_model_is_flagged(digits):
    model, x, _ = digits
    row = randomness_check(Noisy(model), x)
    assert row["flag_randomised"] and row["rand_pred_changed"] and row["rand_max_diff"] > 0.01
    assert randomness_check(model, x)["rand_max_diff"] == 0.0
    with pytest.raises(ValueError, match="passes"):
        randomness_check(model, x, passes=1)


# ------------------------------------------------------------------------------------- (e) Square beats PGD

@pytest.mark.parametrize("b, c, flagged", [(10, 0, True), (5, 0, True), (4, 0, False), (0, 10, False),
                                           (12, 4, False), (14, 2, True), (0, 0, False)])
def test_square_check_paired_margin(b, c, flagged):
    m = 30
    wb = np.ones(m, bool)
    sq = np.ones(m, bool)
    sq[:b] = False  # broken by Square only
    wb[b:b + c] = False  # broken by the white-box attacks only
    row = square_check(torch.as_tensor(wb), list(sq))
    assert row["square_gap"] == pytest.approx((b - c) / m)
    assert row["square_margin"] == pytest.approx(max(0.002, 2 * math.sqrt(b + c) / m))
    assert row["acc_square"] == pytest.approx((m - b) / m) and row["acc_whitebox_sub"] == pytest.approx((m - c) / m)
    assert row["flag_square"] is flagged and row["square_n"] == m
    with pytest.raises(ValueError, match="equal-length"):
        square_check(wb, sq[:-1])


def test_square_beats_pgd_on_the_quantised_model(digits, quantised_row):
    model, x, y = digits
    q = Quantised(model)
    # zero gradients: FGSM and PGD do not move, so they cannot reduce the accuracy at all
    _, delta = run_attack(q, x, y, AttackSettings.official(EPS))
    assert torch.equal(delta, torch.zeros_like(delta))
    row = evaluate_model(q, x, y, eps=EPS)
    assert row["acc_fgsm"] == row["acc_pgd"] == row["acc_clean"] > 0.9
    r = quantised_row
    assert r["flag_square"] and r["acc_square"] < r["acc_whitebox_sub"] - r["square_margin"]
    assert r["acc_whitebox_sub"] == pytest.approx(float((q(x[:50]).argmax(1) == y[:50]).double().mean()))


# ------------------------------------------------------------------------------------- landscape signature

def test_landscape_signature_of_the_quantised_model(quantised_row):
    r = quantised_row
    assert r["flag_landscape"] and r["pgd_increase_mean"] == 0.0 and r["taylor_ratio"] > 100
    assert r["fo_share_median"] == 0.0  # zero gradient: the first-order term explains none of the increase
    assert r["taylor_gap_mean"] > 0.05  # random vertices cross the rounding thresholds and raise the loss
    assert sorted(f for f in FLAGS if r[FLAGS[f].column]) == ["landscape", "square", "zero_grad"]


def test_landscape_check_numbers_against_direct_evaluation(digits):
    model, x, y = digits
    x_pgd, _ = run_attack(model, x, y, AttackSettings.official(EPS))
    row = landscape_check(model, x, y, x_pgd, eps=EPS)
    with torch.no_grad():
        increase = per_sample_loss(model(x_pgd), y) - per_sample_loss(model(x), y)
    assert row["pgd_increase_mean"] == pytest.approx(float(increase.double().mean()), rel=1e-6)
    assert row["taylor_ratio"] == pytest.approx(row["taylor_gap_mean"] / row["pgd_increase_mean"])
    assert not row["flag_landscape"]
    # no perturbation at all (x_pgd = x, eps tiny): nothing rises anywhere -> ratio undefined, no flag
    still = landscape_check(model, x, y, x, eps=1e-9)
    assert math.isnan(still["taylor_ratio"]) and not still["flag_landscape"]


# ------------------------------------------------------------------------------------- reporting

def test_flag_table_and_lines(honest_row, quantised_row):
    table = flag_table(quantised_row)
    assert isinstance(table, pd.DataFrame) and table["flag"].tolist() == list(FLAGS)
    assert set(table.loc[table["flagged"], "flag"]) == {"zero_grad", "square", "landscape"}
    assert set(table["source"]) == {"autoattack", "landscape"}
    lines = flag_lines(quantised_row)
    assert len(lines) == len(FLAGS) and lines[0].startswith("FLAG zero_grad")
    assert all(line.startswith("ok") for line in flag_lines(honest_row))


def test_evaluate_model_reports_flags(digits):
    model, x, y = digits
    row = evaluate_model(Quantised(model), x, y, eps=EPS, checks=True, check_n=40, square_n=0)
    assert row["flagged"] and row["flag_zero_grad"] and row["check_n"] == 40 and row["square_n"] == 0
    plain = evaluate_model(model, x, y, eps=EPS)
    x_fgsm = (x + EPS * torch.autograd.grad(F.cross_entropy(model(x.requires_grad_()), y, reduction="sum"), x)[0]
              .sign()).clamp(0, 1)  # FGSM written independently
    x.requires_grad_(False)
    with torch.no_grad():
        assert plain["acc_fgsm"] == pytest.approx(float((model(x_fgsm).argmax(1) == y).double().mean()))
    assert "flagged" not in plain and plain["acc_fgsm"] < plain["acc_clean"]
    with pytest.raises(ValueError, match="square_n"):
        evaluate_model(model, x, y, eps=EPS, checks=True, square_n=-1)
