"""The official AT/AdvLC training step (TreeLLi/Combating-RO-AdvLC ``src/utils/train.py``), re-implemented
here from its structure, against ``official_cifar10`` in landscape.

The official loop: model in train mode; ``cle = x`` (no random init) requiring grad; ``lgt_cle = model(cle)``;
``ig = ∇ₓ CE_mean``; ``adv = pgd(cle, tgt, model, criterion, eps, step, max_iter, ig)`` — ``ig`` lands in the
``pert`` parameter, so the first step starts from ``x + ig`` (gradient taken at ``clamp(x + ig, 0, 1)``, the
perturbation ``ig + step·sign(∇)`` clamped to the ball and the box); then
``CE(model(adv)) + λ · sum(topk(|lgt_cle − lgt_adv|)) / B`` and one SGD step.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape.attacks import pgd
from landscape.objectives import batch_loss
from landscape.protocol import preset

TOL = 1e-6


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Softplus(),
                         nn.Linear(16, 10)).double().train()


def _batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g).double()
    x[:, :, :2] = x[:, :, :2].round()  # some pixels on the box edges
    return x, torch.arange(n) % 10


def _official_input_grad(model, imgs, tgt):
    out = model(imgs)
    return torch.autograd.grad(F.cross_entropy(out, tgt), imgs)[0]


def _official_pgd(model, imgs, tgt, eps, step, max_iter, pert):
    """The official ``pgd``/``perturb`` pair as called by the training loop (``pert`` = the clean gradient)."""
    ig = None
    for _ in range(max_iter):
        adv = (imgs + pert).clamp(0, 1).requires_grad_(True)
        ig = _official_input_grad(model, adv, tgt) if ig is None else ig
        pert = (pert + step * ig.sign()).clamp(-eps, eps)
        adv = (imgs + pert).clamp(0, 1)
        pert = adv - imgs
        ig = None
    return adv.detach()


def _official_step(model, opt, x, y, *, eps, step, iters, lam, top):
    cle = x.clone().requires_grad_(True)
    lgt_cle = model(cle)
    loss = F.cross_entropy(lgt_cle, y)
    ig = torch.autograd.grad(loss, cle, retain_graph=True)[0]
    adv = _official_pgd(model, x, y, eps, step, iters, ig.clone())
    lgt_adv = model(adv)
    loss = F.cross_entropy(lgt_adv, y)
    diff = (lgt_cle - lgt_adv).abs().view(-1)
    loss = loss + lam * diff.topk(int(diff.numel() * top)).values.sum() / x.shape[0]
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss, adv


def _landscape_step(model, opt, x, y, **kw):
    loss = batch_loss(model, x, y, method="at_advlc", **kw)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def _official_kwargs(**over):
    p = preset("official_cifar10")
    kw = dict(eps=p["eps"], steps=p["steps"], step_size=p["step_size"], random_start=p["random_start"],
              pgd_start=p["pgd_start"], clean_first=p["clean_first"], lam=0.3, top=0.1)
    kw.update(over)
    return kw


def test_official_preset_starts_the_training_attack_at_the_clean_gradient():
    p = preset("official_cifar10")
    assert p["pgd_start"] == "grad" and p["random_start"] is False and p["clean_first"] is True


@pytest.mark.parametrize("eps_scale", [1.0, 4.0])
def test_one_training_step_matches_the_official_update(eps_scale):
    x, y = _batch()
    ours, ref = _model(), _model()
    sgd = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt, ref_opt = torch.optim.SGD(ours.parameters(), **sgd), torch.optim.SGD(ref.parameters(), **sgd)
    kw = _official_kwargs()
    kw["eps"] *= eps_scale
    for _ in range(2):  # two steps, so the momentum buffers take part
        loss = _landscape_step(ours, opt, x, y, **kw)
        ref_loss, _ = _official_step(ref, ref_opt, x, y, eps=kw["eps"], step=kw["step_size"], iters=kw["steps"],
                                     lam=0.3, top=0.1)
        assert abs(float(loss.detach()) - float(ref_loss.detach())) <= TOL
    for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert (a.double() - b.double()).abs().max() <= TOL, k  # weights and batch-norm statistics


def test_grad_start_reproduces_the_official_attack_and_clean_start_does_not():
    x, y = _batch()
    model = _model()
    kw = _official_kwargs()
    xg = x.clone().requires_grad_(True)
    g = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)[0]
    want = _official_pgd(model, x, y, kw["eps"], kw["step_size"], kw["steps"], g.clone())
    got, _ = pgd(model, x, y, kw["eps"], steps=kw["steps"], step_size=kw["step_size"], start="grad",
                 train_mode=True)
    assert (got - want).abs().max() <= TOL
    clean, _ = pgd(model, x, y, kw["eps"], steps=kw["steps"], step_size=kw["step_size"], start="clean",
                   train_mode=True)
    assert (clean - want).abs().max() > 1e-6
    legacy, _ = pgd(model, x, y, kw["eps"], steps=kw["steps"], step_size=kw["step_size"], random_start=False,
                    train_mode=True)
    assert torch.equal(legacy, clean)  # random_start=False is the clean start, as before


def test_clean_start_option_differs_from_the_official_step():
    x, y = _batch()
    a, b = _model(), _model()
    la = _landscape_step(a, torch.optim.SGD(a.parameters(), lr=0.1), x, y, **_official_kwargs())
    lb = _landscape_step(b, torch.optim.SGD(b.parameters(), lr=0.1), x, y, **_official_kwargs(pgd_start="clean"))
    assert float(la.detach()) != float(lb.detach())
