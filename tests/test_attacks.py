"""Tests for landscape.attacks: FGSM/PGD against hand-computed steps, a trained digits model and the contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import stats

from landscape import create_model
from landscape.attacks import fgsm, pgd
from reference_models import LinearSoftmax


def _digits(n: int, seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(d.target))[:n]
    x = torch.tensor(d.images[idx] / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(d.target[idx], dtype=torch.long)


@pytest.fixture(scope="module")
def trained():
    """A small ReLU MLP trained for a few hundred full-batch steps on 600 digits (~1 s)."""
    torch.manual_seed(0)
    x, y = _digits(700)
    model = create_model("mlp", hidden=(64,))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x[:600]), y[:600]).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    return model, x[600:], y[600:]


def _loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def test_fgsm_linf_matches_hand_step_on_linear_softmax():
    model = LinearSoftmax()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 5, 7, 9])
    eps = 0.05
    # ∇x CE = Wᵀ(p − e_y) for logits Wx + b
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        grad = (p - F.one_hot(y, 10).double()) @ model.w
    expected = (x.flatten(1) + eps * grad.sign()).clamp(0, 1).reshape_as(x)
    x_adv, delta = fgsm(model, x, y, eps)
    torch.testing.assert_close(x_adv, expected)
    torch.testing.assert_close(delta, expected - x)


def test_fgsm_l2_step_has_norm_eps_along_gradient():
    model = LinearSoftmax()
    x = torch.full((3, 1, 8, 8), 0.5, dtype=torch.float64)  # far from the box: no clamping at eps=0.1
    y = torch.tensor([1, 2, 3])
    with torch.no_grad():
        grad = (torch.softmax(model(x), 1) - F.one_hot(y, 10).double()) @ model.w
    _, delta = fgsm(model, x, y, 0.1, norm="l2")
    torch.testing.assert_close(delta.flatten(1), 0.1 * grad / grad.norm(dim=1, keepdim=True))


def test_one_step_pgd_without_random_start_equals_fgsm():
    model = LinearSoftmax()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    for norm in ("linf", "l2"):
        a, _ = fgsm(model, x, y, 0.03, norm=norm)
        b, _ = pgd(model, x, y, 0.03, steps=1, step_size=0.03, random_start=False, norm=norm)
        torch.testing.assert_close(a, b)


def test_loss_order_pgd_fgsm_clean_on_trained_model(trained):
    model, x, y = trained
    eps = 0.1
    clean = _loss(model, x, y)
    x_f, _ = fgsm(model, x, y, eps)
    x_p, _ = pgd(model, x, y, eps, steps=10)
    lf, lp = _loss(model, x_f, y), _loss(model, x_p, y)
    assert clean.mean() < lf.mean() < lp.mean()
    assert (lp >= clean - 1e-6).float().mean() > 0.95  # per sample, PGD raises the loss almost everywhere
    acc_clean = (model(x).argmax(1) == y).float().mean()
    acc_pgd = (model(x_p).argmax(1) == y).float().mean()
    assert acc_clean > 0.85 and acc_pgd < acc_clean - 0.2


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_perturbation_in_ball_and_box(trained, attack, norm):
    model, x, y = trained
    eps = 0.3 if norm == "l2" else 0.1
    fn = fgsm if attack == "fgsm" else pgd
    x_adv, delta = fn(model, x, y, eps, norm=norm)
    assert x_adv.shape == delta.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    torch.testing.assert_close(x_adv, x + delta)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.flatten(1).norm(dim=1).max() <= eps + 1e-6
    assert delta.abs().max() > 0


def test_pgd_deterministic_given_seed_and_leaves_global_rng(trained):
    model, x, y = trained
    state = torch.get_rng_state()
    a, _ = pgd(model, x, y, 0.1, steps=3, seed=7)
    b, _ = pgd(model, x, y, 0.1, steps=3, seed=7)
    c, _ = pgd(model, x, y, 0.1, steps=3, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_uniform_in_the_ball(norm):
    model = LinearSoftmax()
    n, d, eps = 400, 64, 0.05
    x = torch.full((n, 1, 8, 8), 0.5, dtype=torch.float64)  # no box clamping
    y = torch.zeros(n, dtype=torch.long)
    _, delta = pgd(model, x, y, eps, steps=1, step_size=0.0, norm=norm, seed=3)
    flat = delta.flatten(1).numpy()
    if norm == "linf":
        u = (flat[:, :5].ravel() + eps) / (2 * eps)  # each coordinate U(-eps, eps)
    else:
        radius = np.linalg.norm(flat, axis=1)
        assert radius.max() <= eps + 1e-12
        u = (radius / eps) ** d  # uniform in the ball <=> (r/eps)^d ~ U(0,1)
        cos = flat[:, 0] / radius  # direction uniform on the sphere: first coordinate has mean 0
        assert abs(cos.mean()) < 4 * np.sqrt(1 / d / n)
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_eps_zero_returns_x_unchanged(trained):
    model, x, y = trained
    for fn in (fgsm, pgd):
        x_adv, delta = fn(model, x, y, 0.0)
        assert torch.equal(x_adv, x)
        assert not delta.any()


def test_mode_restored_and_no_grad_left():
    model = create_model("small_cnn", width=4)
    model.train()
    model.features[0].eval()  # a mixed mode must survive too
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    seen = []
    hook = model.classifier.register_forward_hook(lambda m, i, o: seen.append(m.training))
    fgsm(model, x, y, 0.1)
    pgd(model, x, y, 0.1, steps=2)
    pgd(model, x, y, 0.1, steps=2, train_mode=True)
    hook.remove()
    assert seen == [False, False, False, True, True]
    assert model.training and not model.features[0].training and model.classifier.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_train_mode_uses_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model.eval()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 3, (16,))
    a, _ = pgd(model, x, y, 0.1, steps=3, train_mode=False)
    b, _ = pgd(model, x, y, 0.1, steps=3, train_mode=True)
    assert not model.training
    assert not torch.equal(a, b)


def test_uint8_and_float64_inputs():
    model = LinearSoftmax()
    x8 = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    x_adv, delta = pgd(model, x8, torch.tensor([0, 1]), 0.1, steps=2)
    assert x_adv.dtype == torch.float64
    torch.testing.assert_close(x_adv - delta, x8.double() / 255)


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": -0.1}, "eps"),
    ({"eps": float("nan")}, "eps"),
    ({"eps": 0.1, "steps": 0}, "steps"),
    ({"eps": 0.1, "norm": "l3"}, "'linf', 'l2'"),
    ({"eps": 0.1, "step_size": -1.0}, "step_size"),
])
def test_validation_errors(kwargs, match):
    model = LinearSoftmax()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=match):
        pgd(model, x, y, **kwargs)


def test_validation_of_inputs():
    model = LinearSoftmax()
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        fgsm(model, torch.full((2, 1, 8, 8), 2.0), torch.tensor([0, 1]), 0.1)
    with pytest.raises(ValueError, match="out of range"):
        fgsm(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 10]), 0.1)
    with pytest.raises(TypeError, match="steps"):
        pgd(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), 0.1, steps=2.5)
    with pytest.raises(TypeError, match="labels"):
        fgsm(model, torch.rand(2, 1, 8, 8), torch.tensor([0.0, 1.0]), 0.1)


# ------------------------------------------------------------------ eps units and AttackSettings

@pytest.mark.parametrize("eps", [8, 8.0, 1.5, 255])
def test_eps_outside_unit_range_names_the_fix(tiny_model, eps):
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    from landscape.attacks import AttackSettings

    for call in (lambda: pgd(tiny_model, x, y, eps), lambda: fgsm(tiny_model, x, y, eps),
                 lambda: AttackSettings(eps=eps)):
        with pytest.raises(ValueError, match=r"outside \[0, 1\].*8/255 = 0\.0314|8/255 = 0\.0314") as exc:
            call()
        assert f"{eps / 255:.4f}" in str(exc.value) and "\n" not in str(exc.value)
    pgd(tiny_model, x, y, 1.0, steps=1)  # 1 is still allowed


def test_attack_settings_validate_and_drive_the_attack(tiny_model):
    import dataclasses

    from landscape.attacks import AttackSettings, Norm, run_attack

    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    s = AttackSettings("pgd", 0.1, 5, 0.03, Norm.L2, False)
    assert s.norm == "l2" and s.effective_step_size == 0.03
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.eps = 0.2
    got = run_attack(tiny_model, x, y, s)
    want = pgd(tiny_model, x, y, 0.1, steps=5, step_size=0.03, norm="l2", random_start=False)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert torch.equal(run_attack(tiny_model, x, y, AttackSettings("fgsm", 0.1))[0], fgsm(tiny_model, x, y, 0.1)[0])
    o = AttackSettings.official(8 / 255)
    assert (o.steps, o.step_size, o.random_start) == (10, pytest.approx(2 / 255), False)
    assert o.to_dict() == {"attack": "pgd", "eps": 8 / 255, "steps": 10, "step_size": pytest.approx(2 / 255),
                           "norm": "linf", "random_start": False}
    assert AttackSettings(eps=0.1).effective_step_size == pytest.approx(0.025)
    for bad, err in ((dict(attack="cw"), ValueError), (dict(norm="l1"), ValueError), (dict(steps=0), ValueError),
                     (dict(steps=2.0), TypeError), (dict(random_start=1), TypeError), (dict(eps=-0.1), ValueError)):
        with pytest.raises(err):
            AttackSettings(**bad)
    with pytest.raises(TypeError, match="AttackSettings"):
        run_attack(tiny_model, x, y, {"eps": 0.1})
