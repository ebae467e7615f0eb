"""Tests for landscape.measures.taylor: Taylor gap vs ½δᵀHδ and hand values; logit variation by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape import create_model
from landscape.measures.taylor import logit_variation, logit_variation_batch, taylor_gap
from reference_models import SumLogit


class FirstCoords(nn.Module):
    """logits = the first K input coordinates (so Δlogits = the first K entries of δ)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, x):
        return self.scale * x.flatten(1)[:, : self.k]


def _hessians(model, x, y):
    return torch.stack([
        torch.autograd.functional.hessian(
            lambda z, i=i: F.cross_entropy(model(z.reshape(1, *x.shape[1:])), y[i:i + 1]), x[i].flatten())
        for i in range(x.shape[0])
    ])


def test_taylor_gap_hand_value():
    c = 0.5
    model = SumLogit(c)
    x = torch.full((1, 1, 8, 8), 0.25, dtype=torch.float64)
    delta = torch.full_like(x, 0.01)
    s, ds = c * 16, c * 0.64
    softplus = lambda t: math.log1p(math.exp(t))  # noqa: E731
    expected = softplus(s + ds) - softplus(s) - ds / (1 + math.exp(-s))
    got = taylor_gap(model, x, torch.tensor([1]), delta)
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float64), rtol=1e-10, atol=1e-15)


def test_taylor_gap_approaches_half_quadratic_form():
    torch.manual_seed(0)
    model = create_model("mlp", hidden=(16,), activation="softplus").double().eval()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 3, 6, 9])
    d = torch.randn_like(x)
    hess = _hessians(model, x, y)
    errors = []
    for scale in (1e-1, 1e-2, 1e-3):
        delta = scale * d
        quad = 0.5 * torch.einsum("bi,bij,bj->b", delta.flatten(1), hess, delta.flatten(1))
        gap = taylor_gap(model, x, y, delta)
        errors.append(float(((gap - quad) / quad).abs().max()))
    assert errors[2] < 1e-2
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5  # O(‖δ‖) relative error


def test_taylor_gap_zero_for_zero_delta_and_restores_model():
    model = create_model("small_cnn", width=4).train()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    assert torch.equal(taylor_gap(model, x, y, torch.zeros_like(x)), torch.zeros(2))
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("top, k", [(0.1, 1), (0.25, 3), (0.3, 3), (0.01, 1), (1.0, 10)])
def test_logit_variation_per_sample_sums_top_ceil_entries(top, k):
    model = FirstCoords(10)
    x = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    changes = torch.tensor([[0.1, -0.4, 0.05, 0.3, 0, 0, 0, 0, 0, -0.2],
                            [0.01, 0.02, 0.03, 0.04, 0.05, -0.06, 0.07, 0.08, 0.09, 0.10]], dtype=torch.float64)
    x_adv = x.clone()
    x_adv.view(2, -1)[:, :10] += changes
    expected = changes.abs().sort(1, descending=True).values[:, :k].sum(1)
    torch.testing.assert_close(logit_variation(model, x, x_adv, top=top), expected)


def test_logit_variation_batch_hand_values_and_official_convention():
    clean = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 3.0]])
    # k = int(0.5·6) = 3 entries of the whole batch: 3 + 2 + 1 = 6, / B = 3
    assert float(logit_variation_batch(clean, adv, top=0.5)) == 3.0
    # k = int(0.1·6) = 0 -> at least 1 entry: 3 / 2
    assert float(logit_variation_batch(clean, adv, top=0.1)) == 1.5
    # batch selection differs from per-sample selection: sample 0 gets no entry at k = 1
    assert float(logit_variation_batch(clean, adv, top=0.34)) == 2.5  # int(2.04) = 2: 3 + 2


def test_logit_variation_batch_is_differentiable_and_matches_a_sort():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(8, 10, generator=g, dtype=torch.float64, requires_grad=True)
    adv = torch.randn(8, 10, generator=g, dtype=torch.float64, requires_grad=True)
    value = logit_variation_batch(clean, adv)
    diffs = np.sort(np.abs(adv.detach().numpy() - clean.detach().numpy()).ravel())[::-1]
    assert value.item() == pytest.approx(diffs[:8].sum() / 8, rel=1e-12)  # int(0.1·80) = 8 entries, / B = 8
    assert torch.autograd.gradcheck(lambda a, b: logit_variation_batch(a, b, top=0.2), (clean, adv))
    (g_clean, g_adv) = torch.autograd.grad(value, (clean, adv))
    assert int((g_adv != 0).sum()) == 8  # int(0.1·80) = 8 selected entries, each with gradient ±1/B
    torch.testing.assert_close(g_adv.abs().sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(g_clean, -g_adv)


def test_validation():
    with pytest.raises(ValueError, match="top"):
        logit_variation_batch(torch.zeros(2, 3), torch.ones(2, 3), top=0.0)
    with pytest.raises(ValueError, match="top"):
        logit_variation_batch(torch.zeros(2, 3), torch.ones(2, 3), top=1.5)
    with pytest.raises(ValueError, match="same shape"):
        logit_variation_batch(torch.zeros(2, 3), torch.ones(3, 3))
    with pytest.raises(TypeError, match="floating"):
        logit_variation_batch(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3))
    model = FirstCoords(10)
    with pytest.raises(ValueError, match="shape of x"):
        logit_variation(model, torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8))
    with pytest.raises(ValueError, match="shape of x"):
        taylor_gap(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), torch.rand(2, 64))
