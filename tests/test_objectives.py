"""Training objectives against independent re-implementations of their published formulas.

Each reference below is written from the paper's equation (and, where the official code differs, from that
code), per sample and in float64, and compared with :mod:`landscape.objectives`: the loss value and the
gradient of every parameter on a fixed batch, given the same adversarial inputs (the inner maximisations
are compared separately, from the same seeded start).
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape.objectives import (ADVERSARIAL_METHODS, DEFAULT_LAM, DEFAULT_PARAMS, METHODS, adversarial_inputs,
                                  batch_loss, outer_loss)
from landscape.objectives.smoothness import llr_attack
from landscape.objectives.trades import mart_attack, trades_attack

TOL = 1e-6
EPS, STEPS, ALPHA = 0.1, 3, 0.04


def _model(seed=0, bn=False):
    """Tiny smooth float64 classifier (8x8 inputs, 10 classes): softplus so second derivatives are not 0."""
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(64, 16)] + ([nn.BatchNorm1d(16)] if bn else []) + [nn.Softplus(), nn.Linear(16, 10)]
    return nn.Sequential(*layers).double().train()


def _batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (0.1 + 0.8 * torch.rand(n, 1, 8, 8, generator=g)).double()
    return x, torch.arange(n) % 10


def _x_adv(x, seed=2):
    g = torch.Generator().manual_seed(seed)
    return (x + EPS * (2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1)).clamp(0, 1)


def _grads(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()))


def _close(model, got, want):
    assert abs(float(got.detach()) - float(want.detach())) <= TOL
    for a, b in zip(_grads(model, got), _grads(model, want)):
        assert (a - b).abs().max() <= TOL


def _probs(logits):
    return logits.exp() / logits.exp().sum(-1, keepdim=True)


def _kl(p, q):
    return (p * (p.log() - q.log())).sum(-1)


# ------------------------------------------------------------------------------------------- TRADES / MART
def test_trades_loss_matches_the_published_formula():
    model, (x, y) = _model(), _batch()
    x_adv = _x_adv(x)
    beta = DEFAULT_LAM["trades"]
    terms = []
    for i in range(x.shape[0]):  # CE(f(x), y) + β KL(p(x) || p(x')) per sample, then the batch mean
        p, q = _probs(model(x[i:i + 1])[0]), _probs(model(x_adv[i:i + 1])[0])
        terms.append(-p[y[i]].log() + beta * _kl(p, q))
    _close(model, outer_loss(model, x, y, x_adv, method="trades", lam=beta), torch.stack(terms).mean())
    assert beta == 6.0


def test_mart_loss_matches_the_published_formula_with_the_code_constants():
    model, (x, y) = _model(), _batch()
    x_adv = _x_adv(x)
    beta = DEFAULT_LAM["mart"]
    terms = []
    for i in range(x.shape[0]):
        p, q = _probs(model(x[i:i + 1])[0]), _probs(model(x_adv[i:i + 1])[0])
        others = torch.cat([q[:y[i]], q[y[i] + 1:]])
        bce = -q[y[i]].log() - (1.0001 - others.max() + 1e-12).log()
        kl = (p * (p.log() - (q + 1e-12).log())).sum()
        terms.append(bce + beta * kl * (1.0000001 - p[y[i]]))
    _close(model, outer_loss(model, x, y, x_adv, method="mart", lam=beta), torch.stack(terms).mean())


def _sign_ascent(objective, x, start):
    """The TRADES/MART codes' loop: x' ← clip_[x−ε, x+ε](x' + α sign ∇) then clip to [0,1]."""
    x_adv = start.clone()
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(objective(x_adv), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + ALPHA * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    return x_adv


def _gauss(x, seed):
    return x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)


def test_trades_and_mart_attacks_follow_their_codes():
    model, (x, y) = _model(), _batch()
    with torch.no_grad():
        p = F.softmax(model(x), 1)
    want = _sign_ascent(lambda a: (p * (p.log() - F.log_softmax(model(a), 1))).sum(), x, _gauss(x, 5))
    got = trades_attack(model, x, eps=EPS, steps=STEPS, step_size=ALPHA, seed=5)
    assert (got - want).abs().max() <= TOL
    want = _sign_ascent(lambda a: F.cross_entropy(model(a), y), x, _gauss(x, 7))
    got = mart_attack(model, x, y, eps=EPS, steps=STEPS, step_size=ALPHA, seed=7)
    assert (got - want).abs().max() <= TOL
    assert model.training and all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------------- CURE / LLR
def _sample_grad(model, xi, yi, create_graph=True):
    xi = xi.detach().requires_grad_(True)
    loss = F.cross_entropy(model(xi[None]), yi[None])
    return loss, torch.autograd.grad(loss, xi, create_graph=create_graph)[0]


def test_cure_loss_matches_the_published_formula():
    model, (x, y) = _model(), _batch()
    lam, h = DEFAULT_LAM["cure"], 0.05  # a larger h than the default so the difference is far from rounding
    terms = []
    for i in range(x.shape[0]):
        loss, g = _sample_grad(model, x[i], y[i])
        z = g.detach().sign() / g.detach().sign().norm()
        _, g_h = _sample_grad(model, x[i] + h * z, y[i])
        terms.append(loss + lam * (g_h - g).pow(2).sum())
    _close(model, outer_loss(model, x, y, None, method="cure", lam=lam, cure_h=h), torch.stack(terms).mean())
    assert DEFAULT_PARAMS["cure_h"]["cure"] == pytest.approx(1.5 / 255) and lam == 4.0


def _llr_terms(model, x, y, x_adv, lam, mu):
    terms = []
    for i in range(x.shape[0]):
        loss, g = _sample_grad(model, x[i], y[i])
        d = (x_adv[i] - x[i]).detach()
        gap = (F.cross_entropy(model(x_adv[i:i + 1]), y[i:i + 1]) - loss - (d * g).sum()).abs()
        terms.append(loss + lam * gap + mu * (d * g).sum().abs())
    return torch.stack(terms).mean()


def test_llr_loss_matches_the_published_formula():
    model, (x, y) = _model(), _batch()
    x_adv = _x_adv(x)
    lam, mu = DEFAULT_LAM["llr"], DEFAULT_PARAMS["llr_mu"]["llr"]
    assert (lam, mu) == (4.0, 3.0)
    _close(model, outer_loss(model, x, y, x_adv, method="llr", lam=lam), _llr_terms(model, x, y, x_adv, lam, mu))


def test_llr_inner_maximisation_ascends_the_linearity_gap():
    model, (x, y) = _model(), _batch()
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    start = (x + (2 * u - 1) * EPS).clamp(0, 1)
    losses = F.cross_entropy(model(x), y, reduction="none").detach()
    xg = x.clone().requires_grad_(True)
    g = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)[0]

    def gap(a):
        d = a - x
        return (F.cross_entropy(model(a), y, reduction="none") - losses - (d * g).flatten(1).sum(1)).abs().sum()

    want = _sign_ascent(gap, x, start)
    got = llr_attack(model, x, y, eps=EPS, steps=STEPS, step_size=ALPHA, seed=3)
    assert (got - want).abs().max() <= TOL
    assert float(gap(got).detach()) > float(gap(start).detach())


# ------------------------------------------------------------------------------------------------------- AWP
def _awp_reference(model, loss_fn, gamma, proxy_lr=0.01):
    """The AWP paper's proxy construction: a copy takes one SGD step on −L; v = γ‖w‖/‖Δw‖·Δw per weight."""
    proxy = copy.deepcopy(model)
    opt = torch.optim.SGD(proxy.parameters(), lr=proxy_lr)
    opt.zero_grad()
    (-loss_fn(proxy)).backward()
    opt.step()
    v = {}
    for (name, w), (_, w_new) in zip(model.named_parameters(), proxy.named_parameters()):
        if w.dim() > 1:
            diff = (w_new - w).detach()
            v[name] = gamma * w.detach().norm() / (diff.norm() + 1e-20) * diff
    return v


@pytest.mark.parametrize("method", ["awp_at", "awp_trades"])
def test_awp_loss_and_gradient_are_those_at_the_perturbed_weights(method):
    model, (x, y) = _model(), _batch()
    x_adv = _x_adv(x)
    beta = DEFAULT_LAM[method]
    gamma = DEFAULT_PARAMS["awp_gamma"][method]
    assert gamma == 5e-3

    def loss_fn(m):
        if method == "awp_at":
            return F.cross_entropy(m(x_adv), y)
        p, q = _probs(m(x)), _probs(m(x_adv))
        return F.cross_entropy(m(x), y) + beta * _kl(p, q).mean()

    before = copy.deepcopy(model.state_dict())
    v = _awp_reference(model, loss_fn, gamma)
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in perturbed.named_parameters():
            if name in v:
                p.add_(v[name])
    want = loss_fn(perturbed)
    want_grads = torch.autograd.grad(want, list(perturbed.parameters()))
    got = outer_loss(model, x, y, x_adv, method=method, lam=beta)
    got_grads = torch.autograd.grad(got, list(model.parameters()))
    assert abs(float(got.detach()) - float(want.detach())) <= TOL
    assert abs(float(got.detach()) - float(loss_fn(model).detach())) > 1e-4  # the perturbation matters
    for a, b in zip(got_grads, want_grads):
        assert (a - b).abs().max() <= TOL
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())  # never written into the model
    assert all(p.grad is None for p in model.parameters())


def test_one_awp_step_matches_perturb_backward_restore_step():
    model, (x, y) = _model(bn=True), _batch()
    reference = copy.deepcopy(model)
    kw = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
    # landscape: one training step
    opt = torch.optim.SGD(model.parameters(), **kw)
    x_adv, _ = adversarial_inputs(model, x, y, method="awp_at", eps=EPS, steps=STEPS, step_size=ALPHA, seed=4)
    before = {k: t.clone() for k, t in model.state_dict().items()}
    loss = outer_loss(model, x, y, x_adv, method="awp_at")
    opt.zero_grad()
    loss.backward()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # restored bit for bit
    opt.step()
    # reference: proxy → perturb in place → loss → backward → restore (copy) → step, same x_adv
    ref_opt = torch.optim.SGD(reference.parameters(), **kw)
    reference.load_state_dict(before)  # the BN statistics after the attack, as in the landscape run
    v = _awp_reference(reference, lambda m: F.cross_entropy(m(x_adv), y), 5e-3)
    reference.load_state_dict(before)  # the proxy pass must not move the model's BN statistics
    saved = {n: p.detach().clone() for n, p in reference.named_parameters()}
    with torch.no_grad():
        for n, p in reference.named_parameters():
            if n in v:
                p.add_(v[n])
    ref_loss = F.cross_entropy(reference(x_adv), y)
    ref_opt.zero_grad()
    ref_loss.backward()
    with torch.no_grad():
        for n, p in reference.named_parameters():
            p.copy_(saved[n])
    ref_opt.step()
    assert abs(float(loss.detach()) - float(ref_loss.detach())) <= TOL
    for k, t in model.state_dict().items():
        assert (t.double() - reference.state_dict()[k].double()).abs().max() <= TOL, k


# ----------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_a_finite_differentiable_loss_and_leaves_no_grad(method):
    model, (x, y) = _model(), _batch()
    loss = batch_loss(model, x, y, method=method, eps=EPS if method in ADVERSARIAL_METHODS else 0.0, steps=2,
                      lam=DEFAULT_LAM[method], seed=0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.training


def test_unknown_method_names_the_allowed_ones():
    model, (x, y) = _model(), _batch()
    with pytest.raises(ValueError, match="trades, mart, awp_at, awp_trades, cure, llr"):
        batch_loss(model, x, y, method="trade")
