"""Tests for landscape.measures.gradients: hand values, analytic gradients, per-sample autograd, finite differences."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from landscape import Normalized, create_model
from landscape.measures.gradients import NORMS, gradient_norms, input_gradient
from reference_models import LinearSoftmax, SumLogit


def test_norms_match_hand_values():
    c = 0.5
    model = SumLogit(c)
    x = torch.stack([torch.full((1, 8, 8), 0.25), torch.zeros(1, 8, 8)]).double()
    y = torch.tensor([1, 0])
    norms = gradient_norms(model, x, y)
    # sample 0, label 1: s = 0.5·16 = 8, CE = log(1+e^s), so ∂CE/∂x_j = c·σ(s)
    g0 = c / (1 + math.exp(-8.0))
    # sample 1, label 0: CE = log(1+e^{-s}) at s=0 -> derivative -c·σ(-s) = -c/2
    g1 = c / 2
    expected = {"grad_l1": [64 * g0, 64 * g1], "grad_l2": [8 * g0, 8 * g1], "grad_linf": [g0, g1]}
    assert set(norms) == set(NORMS)
    for key, values in expected.items():
        torch.testing.assert_close(norms[key], torch.tensor(values, dtype=torch.float64))
    grad = input_gradient(model, x, y)
    torch.testing.assert_close(grad[1], torch.full((1, 8, 8), -c / 2, dtype=torch.float64))


def test_gradient_equals_analytic_linear_softmax():
    model = LinearSoftmax()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 2, 4, 6, 8])
    with torch.no_grad():
        expected = (torch.softmax(model(x), 1) - F.one_hot(y, 10).double()) @ model.w  # Wᵀ(p − e_y)
    torch.testing.assert_close(input_gradient(model, x, y).flatten(1), expected)
    norms = gradient_norms(model, x, y)
    torch.testing.assert_close(norms["grad_l1"], expected.abs().sum(1))
    torch.testing.assert_close(norms["grad_l2"], torch.linalg.vector_norm(expected, dim=1))
    torch.testing.assert_close(norms["grad_linf"], expected.abs().max(1).values)


def test_batched_gradient_equals_one_sample_at_a_time_with_batchnorm():
    torch.manual_seed(0)
    model = Normalized(create_model("preact_resnet18", in_channels=1), [0.5], [0.3]).double()
    with torch.no_grad():
        model.train()(torch.rand(8, 1, 8, 8, dtype=torch.float64))  # non-trivial running statistics
    model.eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([1, 5, 9])
    batched = input_gradient(model, x, y)
    for i in range(3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(F.cross_entropy(model(xi), y[i:i + 1]), xi)
        torch.testing.assert_close(batched[i:i + 1], ref)


def test_gradient_matches_central_differences_along_random_directions():
    torch.manual_seed(1)
    model = create_model("mlp", hidden=(16,), activation="tanh").double().eval()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    d = torch.randn_like(x)
    h = 1e-5
    with torch.no_grad():
        fd = (F.cross_entropy(model(x + h * d), y, reduction="none")
              - F.cross_entropy(model(x - h * d), y, reduction="none")) / (2 * h)
    g = input_gradient(model, x, y)
    torch.testing.assert_close((g * d).flatten(1).sum(1), fd, rtol=1e-7, atol=1e-10)


def test_restores_mode_no_grad_and_accepts_float32_model():
    torch.manual_seed(0)
    model = create_model("small_cnn", width=4).train()
    x, y = torch.rand(3, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2])
    grad = input_gradient(model, x, y)
    assert grad.dtype == torch.float32 and grad.shape == x.shape
    assert all(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_validation():
    model = LinearSoftmax()
    with pytest.raises(TypeError, match="labels"):
        input_gradient(model, torch.rand(2, 1, 8, 8), None)
    with pytest.raises(ValueError, match="out of range"):
        input_gradient(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="2 samples but y has 3"):
        gradient_norms(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="Module"):
        input_gradient("model", torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
