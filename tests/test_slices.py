"""Tests for landscape.slices: directions, normalisation, chunked grid evaluation vs direct evaluation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape import create_model, list_models
import landscape.slices as slices
from landscape.slices import (CPU_MAX_BYTES, DIRECTIONS, SliceGrid, blocks, bytes_per_point, chunk_size,
                              compute_direction, grid, normalize_direction, orthogonalize, random_direction, slice_1d,
                              slice_2d)


def _smooth_model(seed: int = 0, dtype=torch.float64) -> nn.Module:
    """Small softplus MLP on (1, 6, 6) inputs, float64 so batched and single evaluations agree tightly."""
    torch.manual_seed(seed)
    return create_model("mlp", input_shape=(1, 6, 6), hidden=(24, 24), num_classes=5,
                        activation="softplus").to(dtype).eval()


def _batch(n: int = 3, seed: int = 0, lo: float = 0.0, hi: float = 1.0, shape=(1, 6, 6), k: int = 5,
           dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, *shape, generator=g, dtype=dtype)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def _direct(model, x, y, i, point):
    """Loss, correct and margin of one point (1, ...) of sample i, evaluated on its own."""
    with torch.no_grad():
        logits = model(point)
    label = y[i:i + 1]
    others = logits.clone()
    others[0, label] = -math.inf
    margin = logits[0, label] - others.max()
    return F.cross_entropy(logits, label).item(), bool(logits.argmax(1) == label), margin.item()


# ---------------------------------------------------------------------------------------------- grid


def test_grid_values_and_centre():
    g = grid(0.3, 7)
    assert g.dtype == torch.float64
    assert torch.allclose(g, torch.tensor([-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3], dtype=torch.float64))
    assert g[3] == 0.0
    assert grid(1.0, 1).tolist() == [0.0]


@pytest.mark.parametrize("radius, n, exc", [(0.0, 5, ValueError), (-1.0, 5, ValueError), (math.inf, 5, ValueError),
                                            (0.1, 0, ValueError), (0.1, 2.5, TypeError), ("1", 5, TypeError)])
def test_grid_rejects_bad_values(radius, n, exc):
    with pytest.raises(exc):
        grid(radius, n)


# ---------------------------------------------------------------------------------------------- directions


def test_normalize_direction_linf_and_unit_per_sample():
    d = torch.tensor([[[3.0, -4.0]], [[0.5, 0.0]], [[0.0, 0.0]]], dtype=torch.float64)  # (3, 1, 2)
    linf = normalize_direction(d, "linf")
    assert torch.allclose(linf, torch.tensor([[[0.75, -1.0]], [[1.0, 0.0]], [[0.0, 0.0]]], dtype=torch.float64))
    unit = normalize_direction(d, "unit")
    assert torch.allclose(unit, torch.tensor([[[0.6, -0.8]], [[1.0, 0.0]], [[0.0, 0.0]]], dtype=torch.float64))
    with pytest.raises(ValueError, match="allowed: unit, linf"):
        normalize_direction(d, "l2")


def test_orthogonalize_per_sample():
    g = torch.Generator().manual_seed(0)
    d1 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    d2 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64) + 2 * d1
    o = orthogonalize(d2, d1)
    dots = (o.flatten(1) * d1.flatten(1)).sum(1)
    assert torch.allclose(dots, torch.zeros(4, dtype=torch.float64), atol=1e-12)
    # hand value: (1, 1) against (1, 0) -> (0, 1)
    e = orthogonalize(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]]))
    assert e.tolist() == [[0.0, 1.0]]
    # a zero reference leaves d2 as it is
    assert torch.equal(orthogonalize(d2, torch.zeros_like(d1)), d2)
    with pytest.raises(ValueError, match="same shape"):
        orthogonalize(d2, d1[:2])


def test_random_direction_seeded_and_kinds():
    x = torch.zeros(3, 1, 6, 6)
    r1, r2 = random_direction(x, seed=4), random_direction(x, seed=4)
    assert torch.equal(r1, r2)
    assert not torch.equal(r1, random_direction(x, seed=5))
    assert set(r1.unique().tolist()) == {-1.0, 1.0}
    assert r1.shape == x.shape and r1.dtype == x.dtype
    gauss = random_direction(torch.zeros(200, 50), kind="gaussian", seed=0)
    assert abs(gauss.mean().item()) < 0.02 and abs(gauss.std().item() - 1) < 0.02
    with pytest.raises(ValueError, match="rademacher, gaussian"):
        random_direction(x, kind="uniform")


def test_compute_direction_names_are_validated():
    model = _smooth_model()
    x, y = _batch()
    with pytest.raises(ValueError, match="did you mean 'random'"):
        compute_direction("randm", model, x, y)
    with pytest.raises(ValueError, match="needs eps"):
        compute_direction("adversarial", model, x, y)
    assert set(DIRECTIONS) == {"adversarial", "gradient", "random", "eigen"}


# ---------------------------------------------------------------------------------------------- 1D slices


@pytest.mark.parametrize("normalization", ["linf", "unit"])
def test_slice_1d_matches_direct_evaluation(normalization):
    model = _smooth_model()
    x, y = _batch(3)
    alphas = grid(0.5, 5)
    df = slice_1d(model, x, y, "random", alphas, normalization=normalization, seed=3)
    assert list(df.columns) == ["sample", "direction", "a", "loss", "correct", "margin"]
    assert len(df) == 3 * 5 and (df["direction"] == "random").all()
    d = normalize_direction(random_direction(x, seed=3), normalization)
    for row in df.itertuples():
        i = int(row.sample)
        loss, correct, margin = _direct(model, x, y, i, x[i:i + 1] + row.a * d[i:i + 1])
        assert row.loss == pytest.approx(loss, rel=1e-10, abs=1e-12)
        assert row.margin == pytest.approx(margin, rel=1e-10, abs=1e-12)
        assert row.correct == correct
    assert df.attrs["normalization"] == normalization and df.attrs["clip"] is False
    assert df.attrs["radius"] == pytest.approx(0.5)


def test_slice_1d_centre_is_clean_loss_and_tensor_direction():
    model = _smooth_model(1)
    x, y = _batch(4, seed=1)
    d = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    df = slice_1d(model, x, y, d, [-1.0, 0.0, 2.0], normalization=None)
    assert (df["direction"] == "custom").all()
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y, reduction="none")
    centre = df[df["a"] == 0.0].sort_values("sample")["loss"].to_numpy()
    np.testing.assert_allclose(centre, clean.numpy(), rtol=1e-12)
    # unnormalised tensor direction: a = 2 is exactly x + 2 d
    far = df[df["a"] == 2.0].sort_values("sample")["loss"].to_numpy()
    with torch.no_grad():
        ref = F.cross_entropy(model(x + 2.0 * d), y, reduction="none")
    np.testing.assert_allclose(far, ref.numpy(), rtol=1e-10)


def test_shared_direction_broadcasts_over_samples():
    model = _smooth_model()
    x, y = _batch(3)
    d = torch.randn(1, 6, 6, dtype=torch.float64)
    a = slice_1d(model, x, y, d, [0.3], normalization=None, as_frame=False)
    b = slice_1d(model, x, y, d.expand(3, 1, 6, 6), [0.3], normalization=None, as_frame=False)
    assert torch.equal(a.loss, b.loss)


def test_adversarial_direction_at_eps_reproduces_attack_loss():
    """linf normalisation, x well inside [0,1]: the point at a = eps is x_adv and its loss the attack's loss."""
    from landscape.attacks import pgd

    model = _smooth_model(2)
    x, y = _batch(4, seed=2, lo=0.2, hi=0.8)
    eps = 0.05
    x_adv, delta = pgd(model, x, y, eps, steps=10, seed=0)
    assert torch.allclose(delta.flatten(1).abs().amax(1), torch.full((4,), eps, dtype=torch.float64))
    with torch.no_grad():
        adv_loss = F.cross_entropy(model(x_adv), y, reduction="none")
        clean_loss = F.cross_entropy(model(x), y, reduction="none")
    out = slice_1d(model, x, y, "adversarial", [0.0, eps], eps=eps, steps=10, seed=0, as_frame=False)
    assert out.loss.shape == (4, 2)
    torch.testing.assert_close(out.loss[:, 1], adv_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.loss[:, 0], clean_loss, rtol=1e-12, atol=1e-12)
    assert (adv_loss > clean_loss).all()  # the attack found higher loss: the slice goes uphill at +eps
    # eps defaults to the slice radius
    out2 = slice_1d(model, x, y, "adversarial", grid(eps, 3), steps=10, seed=0, as_frame=False)
    torch.testing.assert_close(out2.loss[:, 2], adv_loss, rtol=1e-10, atol=1e-12)


def test_gradient_direction_matches_autograd():
    model = _smooth_model(6)
    x, y = _batch(3, seed=6)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    u = g / g.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    out = slice_1d(model, x, y, "gradient", [-0.2, 0.0, 0.2], normalization="unit", as_frame=False)
    for i in range(3):
        for j, a in enumerate([-0.2, 0.0, 0.2]):
            loss, _, _ = _direct(model, x, y, i, x[i:i + 1] + a * u[i:i + 1])
            assert out.loss[i, j].item() == pytest.approx(loss, rel=1e-10)
    # first-order check: moving along +gradient raises the loss, along -gradient lowers it
    assert (out.loss[:, 2] > out.loss[:, 1]).all() and (out.loss[:, 0] < out.loss[:, 1]).all()
    assert all(p.grad is None for p in model.parameters())


def test_eigen_direction_is_top_hessian_eigenvector_and_slice_curvature_matches():
    """Against the full autograd Hessian of a 4-pixel input: eigenvector (up to sign) and d²L/da² = λ."""
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 2, 2), hidden=(16,), num_classes=3, activation="tanh").double()
    x, y = _batch(2, seed=7, shape=(1, 2, 2), k=3)
    d = compute_direction("eigen", model, x, y, iters=300, tol=0.0)
    h = 1e-3
    out = slice_1d(model, x, y, d, [-h, 0.0, h], normalization="unit", as_frame=False)
    for i in range(2):
        hess = torch.autograd.functional.hessian(
            lambda z: F.cross_entropy(model(z.reshape(1, 1, 2, 2)), y[i:i + 1]), x[i].reshape(-1))
        vals, vecs = torch.linalg.eigh(hess)
        top = int(vals.abs().argmax())
        cos = (d[i].reshape(-1) @ vecs[:, top]) / d[i].norm()
        assert abs(cos.item()) == pytest.approx(1.0, abs=1e-6)
        second = (out.loss[i, 0] + out.loss[i, 2] - 2 * out.loss[i, 1]) / h**2
        assert second.item() == pytest.approx(vals[top].item(), rel=1e-3, abs=1e-6)


def test_clip_flag_clamps_points_and_is_recorded():
    model = _smooth_model()
    x, y = _batch(2)
    d = torch.ones(2, 1, 6, 6, dtype=torch.float64)
    clipped = slice_1d(model, x, y, d, [0.5], normalization=None, clip=True)
    exact = slice_1d(model, x, y, d, [0.5], normalization=None)
    assert clipped.attrs["clip"] is True and exact.attrs["clip"] is False
    for i in range(2):
        loss, _, _ = _direct(model, x, y, i, (x[i:i + 1] + 0.5).clamp(0, 1))
        assert clipped["loss"].iloc[i] == pytest.approx(loss, rel=1e-10)
        loss, _, _ = _direct(model, x, y, i, x[i:i + 1] + 0.5)
        assert exact["loss"].iloc[i] == pytest.approx(loss, rel=1e-10)
    assert not np.allclose(clipped["loss"], exact["loss"])


# ---------------------------------------------------------------------------------------------- 2D slices


def test_slice_2d_matches_direct_evaluation_and_orthogonalises():
    model = _smooth_model(3)
    x, y = _batch(2, seed=3)
    g = torch.Generator().manual_seed(9)
    d1 = torch.randn(2, 1, 6, 6, generator=g, dtype=torch.float64)
    d2 = torch.randn(2, 1, 6, 6, generator=g, dtype=torch.float64) + d1  # correlated with d1
    alphas, betas = grid(0.4, 3), torch.tensor([-0.2, 0.1, 0.3, 0.6], dtype=torch.float64)
    df = slice_2d(model, x, y, d1, d2, alphas, betas, normalization="unit")
    assert list(df.columns) == ["sample", "direction1", "direction2", "a", "b", "loss", "correct", "margin"]
    assert len(df) == 2 * 3 * 4
    assert df.attrs["orthogonal"] is True and df.attrs["radius"] == pytest.approx(0.6)
    # independent reference: Gram-Schmidt by hand per sample, unit norms
    for i in range(2):
        u1 = d1[i] / d1[i].norm()
        v = d2[i] - (d2[i] * u1).sum() * u1
        u2 = v / v.norm()
        assert abs((u1 * u2).sum().item()) < 1e-12
        for row in df[df["sample"] == i].itertuples():
            loss, correct, margin = _direct(model, x, y, i, (x[i] + row.a * u1 + row.b * u2)[None])
            assert row.loss == pytest.approx(loss, rel=1e-9, abs=1e-12)
            assert row.margin == pytest.approx(margin, rel=1e-9, abs=1e-12)
            assert row.correct == correct
    # b = 0 row of a 2D slice equals the 1D slice along d1
    one = slice_1d(model, x, y, d1, alphas, normalization="unit", as_frame=False)
    two = slice_2d(model, x, y, d1, d2, alphas, [0.0], normalization="unit", as_frame=False)
    torch.testing.assert_close(two.loss[:, :, 0], one.loss, rtol=1e-12, atol=1e-14)


def test_slice_2d_centre_and_tensor_output_shapes():
    model = _smooth_model(4)
    x, y = _batch(3, seed=4)
    out = slice_2d(model, x, y, "random", "random", grid(0.2, 5), grid(0.1, 3), as_frame=False)
    assert isinstance(out, SliceGrid)
    assert out.loss.shape == out.margin.shape == out.correct.shape == (3, 5, 3)
    assert out.correct.dtype == torch.bool
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(out.loss[:, 2, 1], F.cross_entropy(logits, y, reduction="none"))
    torch.testing.assert_close(out.correct[:, 2, 1], logits.argmax(1) == y)
    df = slice_2d(model, x, y, "random", "random", grid(0.2, 5), grid(0.1, 3))
    np.testing.assert_array_equal(df["loss"].to_numpy(), out.loss.reshape(-1).numpy())
    np.testing.assert_array_equal(df[["a", "b"]].iloc[:3].to_numpy(), [[-0.2, -0.1], [-0.2, 0.0], [-0.2, 0.1]])


def test_seeded_determinism_and_second_random_direction_differs():
    model = _smooth_model()
    x, y = _batch(2)
    a = slice_2d(model, x, y, "random", "random", grid(0.3, 3), grid(0.3, 3), seed=7, as_frame=False)
    b = slice_2d(model, x, y, "random", "random", grid(0.3, 3), grid(0.3, 3), seed=7, as_frame=False)
    c = slice_2d(model, x, y, "random", "random", grid(0.3, 3), grid(0.3, 3), seed=8, as_frame=False)
    assert torch.equal(a.loss, b.loss)
    assert not torch.equal(a.loss, c.loss)
    # d2 uses seed + 1: the 2D slice along b alone equals the 1D slice along the seed-8 random direction made
    # orthogonal to the seed-7 one
    d1 = normalize_direction(random_direction(x, seed=7))
    d2 = normalize_direction(orthogonalize(random_direction(x, seed=8), random_direction(x, seed=7)))
    ref = slice_1d(model, x, y, d2, grid(0.3, 3), normalization=None, as_frame=False)
    torch.testing.assert_close(a.loss[:, 1, :], ref.loss, rtol=1e-12, atol=1e-14)
    ref1 = slice_1d(model, x, y, d1, grid(0.3, 3), normalization=None, as_frame=False)
    torch.testing.assert_close(a.loss[:, :, 1], ref1.loss, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------- chunking


class _CountingModel(nn.Module):
    """Wraps a model and records the batch size of every forward call."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.model(x)


def test_chunked_equals_unchunked_and_respects_budget():
    model = _CountingModel(_smooth_model(5))
    x, y = _batch(3, seed=5)
    whole = slice_2d(model, x, y, "random", "random", grid(0.3, 7), grid(0.3, 5), as_frame=False)
    assert max(model.batches) == 3 * 7 * 5  # one chunk (plus 1-point probes)
    # blocks of whole samples (80), of rows of a (8) and of parts of rows (3)
    for max_batch, largest in [(80, 70), (8, 5), (3, 3)]:
        model.batches.clear()
        small = slice_2d(model, x, y, "random", "random", grid(0.3, 7), grid(0.3, 5), max_batch=max_batch,
                         as_frame=False)
        assert max(model.batches) == largest
        # identical up to BLAS rounding, which depends on the batch size (float64: ~1e-16 relative)
        torch.testing.assert_close(small.loss, whole.loss, rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(small.margin, whole.margin, rtol=1e-13, atol=1e-14)
        assert torch.equal(small.correct, whole.correct)
    # byte budget: chunk = max_bytes // bytes_per_point, and no forward sees more
    point = bytes_per_point(model, x)
    model.batches.clear()
    df = slice_2d(model, x, y, "random", "random", grid(0.3, 7), grid(0.3, 5), max_bytes=point * 11)
    assert df.attrs["chunk_size"] == max(model.batches) == 10  # two rows of b per block
    np.testing.assert_allclose(df["loss"].to_numpy(), whole.loss.reshape(-1).numpy(), rtol=1e-13)


@pytest.mark.parametrize("dims", [(3, 7, 5), (2, 11), (1, 4, 9), (5, 1, 1), (2, 31, 29)])
@pytest.mark.parametrize("chunk", [1, 2, 3, 6, 10, 35, 36, 104, 5000, 10**6])
def test_blocks_tile_the_grid_in_order(dims, chunk):
    flat_index = np.arange(math.prod(dims)).reshape(dims)
    lo = 0
    for block in blocks(dims, chunk):
        flat = flat_index[block].ravel()
        assert 1 <= flat.size <= chunk
        np.testing.assert_array_equal(flat, np.arange(lo, lo + flat.size))  # contiguous, in row-major order
        lo += flat.size
    assert lo == flat_index.size  # every point exactly once


def test_blocks_hand_values():
    assert blocks((3, 7, 5), 80) == [(slice(0, 2), slice(None), slice(None)), (slice(2, 3), slice(None), slice(None))]
    first = blocks((3, 7, 5), 8)[:5]  # one row of b (5 points) per block: 8 // 5 = 1
    assert first[0] == (slice(0, 1), slice(0, 1), slice(None)) and first[4] == (slice(0, 1), slice(4, 5), slice(None))
    assert blocks((1, 1, 5), 3) == [(slice(0, 1), slice(0, 1), slice(0, 3)), (slice(0, 1), slice(0, 1), slice(3, 5))]
    # balanced: 101 rows in blocks of at most 40 -> 34, 34, 33 rows
    rows = [b[1] for b in blocks((1, 101, 101), 4096)]
    assert [r.stop - r.start for r in rows] == [34, 34, 33]


def test_bytes_per_point_counts_input_and_activations():
    # Linear(36 -> 10) in float64 on (1, 6, 6): input 36·8 bytes, leaf outputs: flatten 36·8 + linear 10·8
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10)).double()
    x = torch.zeros(2, 1, 6, 6, dtype=torch.float64)
    expected = 4 * 36 * 8 + 2 * (36 * 8 + 10 * 8) + 10 * 8
    assert bytes_per_point(model, x) == expected
    assert chunk_size(1000, expected, max_batch=4096, max_bytes=expected * 100) == 100
    assert chunk_size(50, expected, max_batch=4096, max_bytes=expected * 100) == 50
    assert chunk_size(1000, expected, max_batch=30, max_bytes=expected * 100) == 30
    assert chunk_size(1000, expected, max_bytes=1) == 1


def test_cifar_scale_grid_stays_within_24_gib():
    """101x101 grid for 256 CIFAR inputs (2.6M points) on preact_resnet18: each chunk fits the budget."""
    model = create_model("preact_resnet18")
    x = torch.zeros(256, 3, 32, 32)
    n_points = 256 * 101 * 101
    point = bytes_per_point(model, x)
    assert point > 4 * 3 * 32 * 32 * 4  # activations are counted, not just the input
    budget = 24 * 1024**3
    for max_bytes in (None, budget):
        c = chunk_size(n_points, point, max_bytes=max_bytes)
        assert c * point <= min(budget, CPU_MAX_BYTES if max_bytes is None else budget)
        assert c <= 4096


def test_large_grid_is_evaluated_in_bounded_chunks():
    """4 CIFAR-size inputs x 101 x 101 grid (41k points) with a cheap model: never more than one chunk built."""
    cheap = _CountingModel(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 10)))
    x, y = _batch(4, shape=(3, 32, 32), k=10, dtype=torch.float32)
    budget = 16 * 1024**2
    out = slice_2d(cheap, x, y, "random", "random", grid(0.1, 101), grid(0.1, 101), max_bytes=budget,
                   as_frame=False)
    point = bytes_per_point(cheap, x)
    assert out.loss.shape == (4, 101, 101) and torch.isfinite(out.loss).all()
    assert max(cheap.batches) * point <= budget
    assert max(cheap.batches) < 4 * 101 * 101 // 10
    # spot-check one far corner against a direct evaluation
    d1 = normalize_direction(random_direction(x, seed=0))
    d2 = normalize_direction(orthogonalize(random_direction(x, seed=1), random_direction(x, seed=0)))
    with torch.no_grad():
        ref = F.cross_entropy(cheap.model(x[3:4] + 0.1 * d1[3:4] - 0.1 * d2[3:4]), y[3:4])
    assert out.loss[3, 100, 0].item() == pytest.approx(ref.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------- contract


def test_model_mode_restored_and_no_param_grads():
    torch.manual_seed(0)
    model = create_model("small_cnn", width=4)
    model.train()
    model.classifier.eval()  # a mixed-mode model must come back exactly as it was
    modes = {n: m.training for n, m in model.named_modules()}
    x, y = _batch(2, shape=(1, 8, 8), k=10, dtype=torch.float32)
    slice_2d(model, x, y, "adversarial", "random", grid(0.1, 3), grid(0.1, 3), steps=2)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_eval_mode_is_used_for_batchnorm_models():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
        model[1].running_var.fill_(2.0)
    model.train()
    x, y = _batch(3, k=4, dtype=torch.float32)
    out = slice_1d(model, x, y, "random", [0.0], as_frame=False)
    model.eval()
    with torch.no_grad():
        ref = F.cross_entropy(model(x), y, reduction="none")
    torch.testing.assert_close(out.loss[:, 0], ref)


_TINY_KWARGS = {  # cheap settings per registered model; others get their defaults on (3, 32, 32) inputs
    "mlp": ({"input_shape": (1, 8, 8), "hidden": (8,)}, (1, 8, 8)),
    "small_cnn": ({"width": 4}, (1, 8, 8)),
    "wide_resnet": ({"depth": 10, "widen_factor": 1}, (3, 32, 32)),
}


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model(name):
    kwargs, shape = _TINY_KWARGS.get(name, ({}, (3, 32, 32)))
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    x, y = _batch(1, shape=shape, k=10, dtype=torch.float32)
    out = slice_1d(model, x, y, "random", [0.0, 0.05], as_frame=False)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
        d = normalize_direction(random_direction(x, seed=0))
        moved = F.cross_entropy(model(x + 0.05 * d), y)
    assert out.loss[0, 0].item() == pytest.approx(clean.item(), rel=1e-5)
    assert out.loss[0, 1].item() == pytest.approx(moved.item(), rel=1e-5)


class _NanAboveHalf(nn.Module):
    """Logits (x̄, 0, 0) per sample, NaN in every entry where the mean pixel x̄ exceeds 0.5."""

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        logits = torch.cat([m, torch.zeros_like(m), torch.zeros_like(m)], dim=1)
        return torch.where(m > 0.5, torch.full_like(logits, math.nan), logits)


def test_nan_logits_give_nan_loss_and_are_not_correct():
    x = torch.full((1, 1, 2, 2), 0.45, dtype=torch.float64)
    y = torch.tensor([0])
    d = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    df = slice_1d(_NanAboveHalf(), x, y, d, [-0.1, 0.1], normalization=None)
    low, high = df.iloc[0], df.iloc[1]
    # mean 0.35: logits (0.35, 0, 0) -> CE = log(e^0.35 + 2) - 0.35, correct, margin 0.35
    assert low["loss"] == pytest.approx(math.log(math.exp(0.35) + 2) - 0.35) and bool(low["correct"])
    assert low["margin"] == pytest.approx(0.35)
    assert math.isnan(high["loss"]) and math.isnan(high["margin"]) and not bool(high["correct"])


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"direction": "sideways"}, ValueError, "allowed: adversarial, gradient, random, eigen"),
    ({"direction": 3}, TypeError, "direction name"),
    ({"direction": torch.zeros(2, 5)}, ValueError, "expected"),
    ({"direction": torch.full((2, 1, 6, 6), math.nan)}, ValueError, "NaN"),
    ({"alphas": []}, ValueError, "non-empty"),
    ({"alphas": [0.0, math.inf]}, ValueError, "finite"),
    ({"alphas": [[0.0, 1.0]]}, ValueError, "1-D"),
    ({"normalization": "l1"}, ValueError, "allowed: unit, linf"),
    ({"max_batch": 0}, ValueError, "max_batch"),
    ({"max_bytes": 1.5}, TypeError, "max_bytes"),
    ({"clip": "yes"}, TypeError, "clip"),
])
def test_slice_1d_validation(kwargs, exc, match):
    model = _smooth_model()
    x, y = _batch(2)
    args = {"direction": "random", "alphas": [0.0, 0.1], **kwargs}
    direction, alphas = args.pop("direction"), args.pop("alphas")
    with pytest.raises(exc, match=match):
        slice_1d(model, x, y, direction, alphas, **args)


def test_slice_validation_of_batch_and_pairs():
    model = _smooth_model()
    x, y = _batch(2)
    with pytest.raises(ValueError, match="both 'gradient'"):
        slice_2d(model, x, y, "gradient", "gradient", [0.0], [0.0])
    with pytest.raises(ValueError, match="out of range"):
        slice_1d(model, x, torch.tensor([0, 7]), "random", [0.0])
    with pytest.raises(ValueError, match="NaN"):
        slice_1d(model, torch.full_like(x, math.nan), y, "random", [0.0])
    with pytest.raises(TypeError, match="Module"):
        slice_1d(lambda t: t, x, y, "random", [0.0])


# ---------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("text, expected", [("0..3", [0, 1, 2, 3]), ("3", [3]), ("1,4,7", [1, 4, 7]),
                                            ("0..2, 5", [0, 1, 2, 5]), ("4,4,1", [1, 4])])
def test_parse_index(text, expected):
    from landscape.commands.slice import parse_index

    assert parse_index(text) == expected


@pytest.mark.parametrize("text", ["", "a", "5..2", "-1", "1..", "0..-3", "1.5"])
def test_parse_index_rejects(text):
    from landscape.commands.slice import parse_index

    with pytest.raises(ValueError, match="--index"):
        parse_index(text)


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    from landscape.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = create_model("small_cnn", width=4).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model, epoch=1)
    return path, model


def test_cli_slice_2d_writes_parquet_and_png(digits_checkpoint, tmp_path, capsys):
    from landscape.cli import main
    from landscape.datasets import load_dataset

    ckpt, model = digits_checkpoint
    rc = main(["slice", str(ckpt), "--arch", "small_cnn", "--arch-arg", "width=4", "--data", "digits",
               "--index", "2,0,5", "--dirs", "adversarial", "random", "--grid", "5", "--radius", "0.1",
               "--steps", "2", "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 0
    df = pd.read_parquet(tmp_path / "out" / "slices_2d.parquet")
    assert {"sample", "index", "direction1", "direction2", "a", "b", "loss", "correct", "margin"} <= set(df.columns)
    assert len(df) == 3 * 5 * 5 and sorted(df["index"].unique()) == [0, 2, 5]
    assert df.attrs["radius"] == pytest.approx(0.1) and df.attrs["clip"] is False
    assert df.attrs["normalization"] == "linf" and df.attrs["eps"] == pytest.approx(0.1)
    x, y = load_dataset("digits", "test")
    centre = df[(df["a"] == 0) & (df["b"] == 0)].sort_values("index")
    with torch.no_grad():
        ref = F.cross_entropy(model(x[[0, 2, 5]]), y[[0, 2, 5]], reduction="none")
    np.testing.assert_allclose(centre["loss"].to_numpy(), ref.numpy(), rtol=1e-5)
    png = (tmp_path / "out" / "slices_2d.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "wrote" in capsys.readouterr().out


def test_cli_slice_1d_several_directions(digits_checkpoint, tmp_path):
    from landscape.cli import main

    ckpt, _ = digits_checkpoint
    rc = main(["slice", str(ckpt), "--arch", "small_cnn", "--arch-arg", "width=4", "--index", "0..1",
               "--dirs", "random", "gradient", "eigen", "--grid", "3", "--radius", "0.05",
               "--normalization", "unit", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    df = pd.read_parquet(tmp_path / "slices_1d.parquet")
    assert len(df) == 3 * 2 * 3
    assert list(pd.unique(df["direction"])) == ["random", "gradient", "eigen"]
    assert df.attrs["normalization"] == "unit"
    centre = df[df["a"] == 0].groupby("index")["loss"]
    assert (centre.max() - centre.min()).max() < 1e-6  # a = 0 is the same clean point for every direction
    assert (tmp_path / "slices_1d.png").exists()


@pytest.mark.parametrize("extra, message", [
    (["--grid", "0"], "positive integer"),
    (["--radius", "-0.1"], "> 0"),
    (["--index", "0..999"], "out of range"),
    (["--index", "x"], "--index"),
    (["--dirs", "random", "--kind", "2d"], "two --dirs"),
    (["--dirs", "random", "random", "gradient"], "twice"),
    (["--dirs", "sideways"], "invalid choice"),
])
def test_cli_slice_user_errors_exit_2_with_one_line(digits_checkpoint, tmp_path, capsys, extra, message):
    from landscape.cli import main

    ckpt, _ = digits_checkpoint
    argv = ["slice", str(ckpt), "--arch", "small_cnn", "--arch-arg", "width=4", "--out", str(tmp_path),
            "--grid", "3", "--quiet", *extra]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_adversarial_direction_needs_a_positive_eps(tiny_model):
    x = torch.rand(2, 1, 8, 8)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="needs eps > 0, got eps=0"):
        slice_1d(tiny_model, x, y, "adversarial", grid(0.1, 5), eps=0.0)


def test_autocast_slices_are_close_to_float32_and_the_option_is_validated():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    alphas = torch.linspace(-0.1, 0.1, 5)
    ref = slices.slice_1d(model, x, y, "random", alphas, as_frame=False)
    low = slices.slice_1d(model, x, y, "random", alphas, as_frame=False, autocast="bf16")
    assert low.loss.dtype == torch.float32
    # bf16 keeps 8 mantissa bits: a few 1e-3 relative on losses of order 1, and not bit-equal to float32
    torch.testing.assert_close(low.loss, ref.loss, rtol=2e-2, atol=2e-2)
    assert not torch.equal(low.loss, ref.loss)
    with pytest.raises(ValueError, match="unknown autocast 'bf8'"):
        slices.slice_2d(model, x, y, "random", "random", alphas, alphas, autocast="bf8")
