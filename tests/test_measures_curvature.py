"""Tests for landscape.measures.curvature against analytic Hessians, autograd Hessians and finite differences."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape import Normalized, create_model
from landscape.measures.curvature import directional_curvature, hessian_spectrum, hvp, top_eigenvalue
from reference_models import LinearSoftmax

METHODS = ["func", "double_backprop"]


class HookedTanh(nn.Module):
    """A model torch.func cannot trace (full backward hooks are autograd.Functions without setup_context)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(64, 10).double()
        self.lin.register_full_backward_hook(lambda module, grad_in, grad_out: None)

    def forward(self, x):
        return 3 * torch.tanh(self.lin(x.flatten(1)))


def _smooth_mlp(activation: str = "softplus", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("mlp", hidden=(16,), activation=activation).double().eval()


def _batch(b: int = 4, seed: int = 0, k: int = 10):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, 8, 8, generator=g, dtype=torch.float64)
    return x, torch.arange(b) % k, torch.randn(b, 1, 8, 8, generator=g, dtype=torch.float64)


def _full_hessians(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, D, D) per-sample input Hessians with torch.autograd.functional.hessian (the reference)."""
    out = []
    for i in range(x.shape[0]):
        def f(xi, i=i):
            return F.cross_entropy(model(xi.reshape(1, *x.shape[1:])), y[i:i + 1])

        out.append(torch.autograd.functional.hessian(f, x[i].flatten()))
    return torch.stack(out)


@pytest.mark.parametrize("method", METHODS)
def test_hvp_equals_analytic_hessian_of_linear_softmax(method):
    model = LinearSoftmax()
    x, y, v = _batch()
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    w = model.w.detach()
    expected = []
    for i in range(x.shape[0]):
        h = w.T @ (torch.diag(p[i]) - torch.outer(p[i], p[i])) @ w  # Wᵀ(diag p − ppᵀ)W
        expected.append(h @ v[i].flatten())
    got = hvp(model, x, y, v, method=method)
    torch.testing.assert_close(got.flatten(1), torch.stack(expected), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["softplus", "tanh"])
@pytest.mark.parametrize("method", ["auto", *METHODS])
def test_hvp_equals_autograd_hessian_of_smooth_mlp(method, activation):
    model = _smooth_mlp(activation)
    x, y, v = _batch(3)
    hess = _full_hessians(model, x, y)
    expected = torch.einsum("bij,bj->bi", hess, v.flatten(1))
    got = hvp(model, x, y, v, method=method)
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-9, atol=1e-12)
    # a smooth net has logit curvature: its Hessians are indefinite, unlike Wᵀ(diag p − ppᵀ)W
    assert (torch.linalg.eigvalsh(hess)[:, 0] < -1e-6).any()


def test_hvp_matches_central_finite_differences_of_gradients():
    model = _smooth_mlp("softplus", seed=1)
    x, y, v = _batch(5, seed=1)

    def grad(z):
        z = z.clone().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(model(z), y, reduction="sum"), z)[0]

    got = hvp(model, x, y, v)
    errors = []
    for h in (1e-2, 1e-3):
        fd = (grad(x + h * v) - grad(x - h * v)) / (2 * h)
        errors.append(float((fd - got).norm() / got.norm()))
    assert errors[1] < 1e-5
    assert errors[1] < errors[0] / 50  # O(h²) truncation error: 10x smaller h, ~100x smaller error


@pytest.mark.parametrize("name, kwargs, shape", [
    ("small_cnn", {"width": 4}, (3, 1, 8, 8)),
    ("mlp", {"hidden": (8, 8), "activation": "gelu"}, (3, 1, 8, 8)),
    ("preact_resnet18", {}, (2, 3, 8, 8)),
])
def test_forward_over_reverse_and_double_backprop_agree(name, kwargs, shape):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).double()
    if name == "preact_resnet18":  # non-trivial batch-norm running statistics
        model = Normalized(model, [0.5] * 3, [0.25] * 3)
        with torch.no_grad():
            model.train()(torch.rand(8, *shape[1:], dtype=torch.float64))
    model.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    v = torch.randn(shape, generator=g, dtype=torch.float64)
    y = torch.arange(shape[0])
    a = hvp(model, x, y, v, method="func")
    b = hvp(model, x, y, v, method="double_backprop")
    assert a.abs().max() > 0
    torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10 * float(a.abs().max()))


def test_hvp_is_per_sample():
    """Row i depends only on sample i: a batch of one gives the same row."""
    model = _smooth_mlp()
    x, y, v = _batch(4)
    full = hvp(model, x, y, v)
    for i in range(4):
        torch.testing.assert_close(full[i:i + 1], hvp(model, x[i:i + 1], y[i:i + 1], v[i:i + 1]))


def test_relu_net_hessian_is_gauss_newton_psd():
    """For a piecewise-linear net H = Jᵀ(diag p − ppᵀ)J: PSD, rank <= K-1."""
    torch.manual_seed(0)
    model = create_model("small_cnn", width=4).double().eval()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([3])
    eye = torch.eye(64, dtype=torch.float64).reshape(64, 1, 8, 8)
    hess = hvp(model, x.expand(64, -1, -1, -1), y.expand(64), eye).flatten(1)  # column j = H e_j
    jac = torch.autograd.functional.jacobian(lambda z: model(z.reshape(1, 1, 8, 8))[0], x.flatten())
    with torch.no_grad():
        p = torch.softmax(model(x), 1)[0]
    expected = jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac
    torch.testing.assert_close(hess, expected, rtol=1e-8, atol=1e-12)
    eig = torch.linalg.eigvalsh((hess + hess.T) / 2)
    assert eig[0] > -1e-10 * eig[-1]
    assert int((eig > 1e-9 * eig[-1]).sum()) <= 9


@pytest.mark.parametrize("activation", ["softplus", "tanh"])
def test_top_eigenvalue_matches_eigvalsh_of_full_hessian(activation):
    model = _smooth_mlp(activation, seed=2)
    x, y, _ = _batch(6, seed=2)
    hess = _full_hessians(model, x, y)
    eig = torch.linalg.eigvalsh(hess)  # ascending
    by_magnitude = eig.gather(1, eig.abs().argsort(1, descending=True))
    expected, second = by_magnitude[:, 0], by_magnitude[:, 1]
    values, vectors = top_eigenvalue(model, x, y, iters=400, tol=1e-12, seed=0)
    assert values.shape == (6,) and vectors.shape == x.shape
    torch.testing.assert_close(vectors.flatten(1).norm(dim=1), torch.ones(6, dtype=torch.float64))
    well_separated = (second.abs() / expected.abs()) < 0.95
    assert well_separated.sum() >= 3
    torch.testing.assert_close(values[well_separated], expected[well_separated], rtol=1e-6, atol=0)
    # the vector is an eigenvector: ‖H v − λ v‖ small relative to |λ|
    hv = torch.einsum("bij,bj->bi", hess, vectors.flatten(1))
    residual = (hv - values[:, None] * vectors.flatten(1)).norm(dim=1) / values.abs()
    assert residual[well_separated].max() < 1e-2
    # values and vectors are Rayleigh pairs for every sample
    torch.testing.assert_close((vectors.flatten(1) * hv).sum(1), values)


def test_top_eigenvalue_few_iterations_is_a_lower_bound_and_improves():
    """For a PSD Hessian the Lanczos Rayleigh quotient increases towards λ_max with more iterations."""
    model = LinearSoftmax()
    x, y, _ = _batch(4)
    lam_max = torch.linalg.eigvalsh(_full_hessians(model, x, y))[:, -1]
    v2, _ = top_eigenvalue(model, x, y, iters=2, tol=0.0, solver="lanczos")
    v50, _ = top_eigenvalue(model, x, y, iters=50, tol=0.0, solver="lanczos")
    assert (v2 <= lam_max * (1 + 1e-12)).all() and (v2 <= v50 * (1 + 1e-12)).all()
    assert ((lam_max - v50) / lam_max).max() < ((lam_max - v2) / lam_max).min()


def test_top_eigenvalue_is_deterministic_given_seed():
    model = _smooth_mlp()
    x, y, _ = _batch(3)
    a = top_eigenvalue(model, x, y, iters=3, seed=5)
    b = top_eigenvalue(model, x, y, iters=3, seed=5)
    c = top_eigenvalue(model, x, y, iters=3, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_directional_curvature_matches_full_hessian_and_is_scale_invariant():
    model = _smooth_mlp("tanh")
    x, y, d = _batch(4)
    hess = _full_hessians(model, x, y)
    df = d.flatten(1)
    expected = torch.einsum("bi,bij,bj->b", df, hess, df) / (df * df).sum(1)
    got = directional_curvature(model, x, y, d)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    scale = torch.tensor([1e-3, 1.0, 7.0, 100.0], dtype=torch.float64).reshape(4, 1, 1, 1)
    torch.testing.assert_close(directional_curvature(model, x, y, d * scale), expected, rtol=1e-9, atol=1e-12)


def test_directional_curvature_of_zero_direction_is_zero():
    model = _smooth_mlp()
    x, y, d = _batch(3)
    d[1] = 0
    got = directional_curvature(model, x, y, d)
    assert got[1] == 0 and got[0] != 0 and got[2] != 0


def test_auto_uses_double_backprop_where_torch_func_fails():
    model = HookedTanh()
    x, y, v = _batch(2)
    with pytest.raises(RuntimeError):
        hvp(model, x, y, v, method="func")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback needed, so no warning
        got = hvp(model, x, y, v, method="auto")
    expected = torch.einsum("bij,bj->bi", _full_hessians(model, x, y), v.flatten(1))
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-9, atol=1e-12)


def test_auto_falls_back_to_torch_func_with_a_warning(monkeypatch):
    from landscape.measures import _autograd

    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("derivative for some_op_backward is not implemented")

    monkeypatch.setattr(_autograd, "gradient_graph", broken)
    model = _smooth_mlp()
    x, y, v = _batch(2)
    with pytest.warns(RuntimeWarning, match="some_op_backward.*torch.func"):
        got = hvp(model, x, y, v)
    expected = torch.einsum("bij,bj->bi", _full_hessians(model, x, y), v.flatten(1))
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-9, atol=1e-12)
    calls.clear()
    with pytest.warns(RuntimeWarning):
        values, _ = top_eigenvalue(model, x, y, iters=5, tol=0.0)
    assert len(calls) == 1  # Lanczos keeps the working method after one fallback
    eig = torch.linalg.eigvalsh(_full_hessians(model, x, y))
    assert torch.isfinite(values).all() and (values.abs() <= eig.abs().amax(1) * (1 + 1e-9)).all()


def test_detached_backward_is_an_error_not_a_zero_hessian():
    class DetachedGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return z ** 3

        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            return (3 * z ** 2 * g).detach()

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10).double()

        def forward(self, z):
            return self.lin(DetachedGrad.apply(z.flatten(1)))

    x, y, v = _batch(2)
    with pytest.raises(RuntimeError, match="not differentiable"):
        hvp(Model(), x, y, v, method="double_backprop")


def test_measures_restore_mode_and_leave_no_grad():
    torch.manual_seed(0)
    model = create_model("small_cnn", width=4)
    model.train()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    seen = []
    model.classifier.register_forward_hook(lambda m, i, o: seen.append(m.training))
    hvp(model, x, y, torch.randn_like(x))
    hvp(model, x, y, torch.randn_like(x), method="double_backprop")
    directional_curvature(model, x, y, torch.randn_like(x))
    top_eigenvalue(model, x, y, iters=2)
    assert seen and not any(seen)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_validation():
    model = LinearSoftmax()
    x, y, v = _batch(2)
    with pytest.raises(ValueError, match="'auto', 'double_backprop', 'func'"):
        hvp(model, x, y, v, method="lanczos")
    with pytest.raises(ValueError, match="shape"):
        hvp(model, x, y, v[:1])
    with pytest.raises(ValueError, match="NaN"):
        directional_curvature(model, x, y, v * float("nan"))
    with pytest.raises(ValueError, match="iters"):
        top_eigenvalue(model, x, y, iters=0)
    with pytest.raises(TypeError, match="Module"):
        hvp(lambda z: z, x, y, v)


# ------------------------------------------------------------------------------------ Lanczos and hs


def _top_by_magnitude(hess: torch.Tensor) -> torch.Tensor:
    eig = torch.linalg.eigvalsh(hess)
    return eig.gather(1, eig.abs().argmax(1, keepdim=True))[:, 0]


def _relu_cnn():
    torch.manual_seed(0)
    return create_model("small_cnn", width=4).double().eval()


@pytest.mark.parametrize("solver", ["auto", "lanczos"])
def test_top_eigenvalue_of_relu_net_is_exact_with_default_settings(solver):
    """A ReLU net's Hessian has rank <= K-1: Lanczos (at least K steps) finds its top eigenvalue exactly, and
    so does the Gauss–Newton reduction that ``auto`` picks for it."""
    model = _relu_cnn()
    x, y, _ = _batch(8, seed=4)
    expected = _top_by_magnitude(_full_hessians(model, x, y))
    values, vectors = top_eigenvalue(model, x, y, solver=solver)
    torch.testing.assert_close(values, expected, rtol=1e-9, atol=0)
    hv = hvp(model, x, y, vectors).flatten(1)
    residual = (hv - values[:, None] * vectors.flatten(1)).norm(dim=1) / values.abs()
    assert residual.max() < 1e-6


@pytest.mark.parametrize("activation", ["softplus", "tanh"])
def test_lanczos_meets_its_tolerance_on_smooth_nets_and_stops_early(activation):
    """Indefinite full-rank Hessians: default tol 1e-3 gives errors well below 1e-3, in far fewer than D steps."""
    from landscape.measures.curvature import HessianOperator
    from landscape.measures.lanczos import _krylov, _top_from_ritz

    model = _smooth_mlp(activation, seed=3)
    x, y, _ = _batch(12, seed=5)
    expected = _top_by_magnitude(_full_hessians(model, x, y))
    ritz = _krylov(HessianOperator(model, x, y), x, iters=64, tol=1e-3, seed=0)
    values, _ = _top_from_ritz(ritz, x)
    rel = (values - expected).abs() / expected.abs()
    assert rel.max() < 1e-3
    assert ritz.converged.all() and ritz.steps.max() < 40
    # finished samples leave the product batch (once at most half of it is left): fewer sample-products
    # than steps x batch
    assert int(ritz.steps.sum()) <= ritz.sample_products < ritz.products * x.shape[0]


def test_lanczos_results_do_not_depend_on_the_rest_of_the_batch():
    model = _smooth_mlp("tanh", seed=1)
    x, y, _ = _batch(5, seed=6)
    together, _ = top_eigenvalue(model, x, y, tol=1e-8, iters=64)
    alone = torch.stack([top_eigenvalue(model, x[i:i + 1], y[i:i + 1], tol=1e-8, iters=64)[0][0] for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=1e-7, atol=0)


def _union_top_k(hess: torch.Tensor, k: int) -> torch.Tensor:
    eig = (torch.linalg.eigvalsh(hess) / hess.shape[0]).flatten()
    return eig[eig.abs().argsort(descending=True)[:k]]


@pytest.mark.parametrize("which, solver", [("relu", "auto"), ("relu", "lanczos"), ("softplus", "auto"),
                                           ("tanh", "auto")])
def test_hessian_spectrum_equals_top_k_of_dense_per_sample_hessians(which, solver):
    model = _relu_cnn() if which == "relu" else _smooth_mlp(which, seed=2)
    x, y, _ = _batch(10, seed=7)
    expected = _union_top_k(_full_hessians(model, x, y), 20)
    got = hessian_spectrum(model, x, y, k=20, tol=1e-6, solver=solver)
    assert got.shape == (20,) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-12 * float(expected.abs().max()))
    default = hessian_spectrum(model, x, y, solver=solver)  # default tol 1e-3: the hs value well within 1e-3
    assert abs(float(default.abs().mean() / expected.abs().mean()) - 1) < 1e-3


def test_hessian_spectrum_equals_dense_hessian_of_the_batch_mean_loss():
    """Independent of the block-diagonal argument: the full (B·D, B·D) Hessian of the batch-mean CE."""
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 4, 4), hidden=(8,), activation="tanh", num_classes=4).double().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 3])
    dense = torch.autograd.functional.hessian(
        lambda z: F.cross_entropy(model(z.reshape(3, 1, 4, 4)), y), x.flatten())  # mean reduction, (48, 48)
    eig = torch.linalg.eigvalsh(dense)
    expected = eig[eig.abs().argsort(descending=True)[:20]]
    got = hessian_spectrum(model, x, y, k=20, tol=0.0, iters=16)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-12)


def test_hs_columns_of_measure_equal_the_dense_batch_spectrum_per_batch():
    """ReLU net (exact Lanczos): hs / hs_at_adv = mean |top-20| of the batch-mean Hessian, one value per batch."""
    from landscape import measure
    from landscape.attacks import fgsm

    model = _relu_cnn()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(7, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.arange(7) % 10
    df = measure(model, x, y, eps=0.05, attack="fgsm", measures=["hs", "hs_at_adv", "eig_top"], batch_size=4)
    x_adv, _ = fgsm(model, x, y, 0.05)
    for rows in (slice(0, 4), slice(4, 7)):
        n = len(range(7)[rows])
        hs = float(_union_top_k(_full_hessians(model, x[rows], y[rows]), 20).abs().mean())
        hs_adv = float(_union_top_k(_full_hessians(model, x_adv[rows], y[rows]), 20).abs().mean())
        assert df["hs"].iloc[rows].tolist() == pytest.approx([hs] * n, rel=1e-8)
        assert df["hs_at_adv"].iloc[rows].tolist() == pytest.approx([hs_adv] * n, rel=1e-8)
    assert df["hs"].iloc[0] != df["hs"].iloc[4]  # one value per batch
    expected = _top_by_magnitude(_full_hessians(model, x, y))
    np.testing.assert_allclose(df["eig_top"], expected.numpy(), rtol=1e-8)


def test_spectrum_validation():
    model = LinearSoftmax()
    x, y, _ = _batch(2)
    with pytest.raises(ValueError, match="k must be"):
        hessian_spectrum(model, x, y, k=0)
    with pytest.raises(ValueError, match="k must be"):
        hessian_spectrum(model, x, y, k=129)
    with pytest.raises(ValueError, match="tol"):
        hessian_spectrum(model, x, y, tol=-1.0)
    with pytest.raises(ValueError, match="iters"):
        hessian_spectrum(model, x, y, iters=0)
    with pytest.raises(ValueError, match="unknown solver 'power'"):
        hessian_spectrum(model, x, y, solver="power")
    with pytest.raises(ValueError, match="unknown solver"):
        top_eigenvalue(model, x, y, solver="gn")
