"""The Gauss–Newton eigen-solver (landscape.measures.gauss_newton): exact spectra of piecewise-linear nets
from the logit Jacobian, a per-sample test that sends every other sample to Lanczos, and its use by the
measure table."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape import create_model, measure
from landscape.measures import gauss_newton as gn_module
from landscape.measures.curvature import (HessianOperator, _gauss_newton, _top_eigenvalue, hessian_spectrum,
                                          hvp, top_eigenvalue)


def _relu_cnn() -> nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", width=4).double().eval()


def _softplus_mlp() -> nn.Module:
    torch.manual_seed(1)
    return create_model("mlp", hidden=(16,), activation="softplus").double().eval()


def _batch(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, 8, 8, generator=g, dtype=torch.float64), torch.arange(b) % 10


def _dense(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, D, D) per-sample input Hessians of the cross-entropy by torch.autograd.functional.hessian."""
    return torch.stack([torch.autograd.functional.hessian(
        lambda z, i=i: F.cross_entropy(model(z.reshape(1, *x.shape[1:])), y[i:i + 1]), x[i].flatten())
        for i in range(x.shape[0])])


def _top(hess: torch.Tensor) -> torch.Tensor:
    eig = torch.linalg.eigvalsh(hess)
    return eig.gather(1, eig.abs().argmax(1, keepdim=True))[:, 0]


class Mixed(nn.Module):
    """ReLU for samples whose first pixel is below 0.5, softplus for the others (chosen by a constant mask):
    half the batch has piecewise-linear logits, half does not."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.a, self.b = nn.Linear(64, 16).double(), nn.Linear(16, 10).double()

    def forward(self, x):
        h = self.a(x.flatten(1))
        smooth = (x.flatten(1)[:, :1] >= 0.5).to(h.dtype)
        return self.b(smooth * F.softplus(h) + (1 - smooth) * F.relu(h))


@pytest.mark.parametrize("batched", [False, True])
def test_logit_jacobian_equals_per_sample_jacrev(batched):
    model = _relu_cnn()
    x, _ = _batch(5)
    xr = x.clone().requires_grad_(True)
    jac = gn_module.logit_jacobian(xr, model(xr), batched=batched)
    for i in range(5):
        ref = torch.func.jacrev(lambda z: model(z.reshape(1, 1, 8, 8))[0])(x[i].flatten())
        torch.testing.assert_close(jac[i], ref, rtol=1e-12, atol=1e-14)


def test_reduced_spectrum_is_the_dense_hessian_spectrum_of_a_relu_net():
    """All K eigenvalues of A^½JJᵀA^½ are the non-zero eigenvalues of the dense D×D Hessian (the rest 0)."""
    model = _relu_cnn()
    x, y = _batch(6, seed=3)
    op = HessianOperator(model, x, y)
    gn = _gauss_newton(op, tol=1e-3, seed=0)
    assert gn.exact.all() and gn.values.shape == (6, 10)
    dense = torch.linalg.eigvalsh(_dense(model, x, y))  # (6, 64) ascending
    scale = float(dense.abs().max())
    torch.testing.assert_close(gn.values, dense[:, -10:], rtol=0, atol=1e-11 * scale)
    assert dense[:, :-10].abs().max() < 1e-11 * scale
    assert (gn.bound == 0).all()  # piecewise-linear logits: the measured logit curvature is exactly 0


@pytest.mark.parametrize("method", ["auto", "func"])
def test_top_eigenpair_of_a_relu_net_is_exact_and_uses_no_lanczos_step(method):
    model = _relu_cnn()
    x, y = _batch(8, seed=4)
    values, vectors, info = _top_eigenvalue(model, x, y, iters=30, tol=1e-3, seed=0, method=method)
    assert info["solver"] == "gauss_newton" and info["iterations"] == 0 and info["converged"] == 8
    torch.testing.assert_close(values, _top(_dense(model, x, y)), rtol=1e-10, atol=0)
    flat = vectors.flatten(1)
    torch.testing.assert_close(flat.norm(dim=1), torch.ones(8, dtype=torch.float64))
    residual = (hvp(model, x, y, vectors).flatten(1) - values[:, None] * flat).norm(dim=1) / values.abs()
    assert residual.max() < 1e-10


def test_smooth_net_fails_the_test_and_gets_the_lanczos_answer():
    model = _softplus_mlp()
    x, y = _batch(6, seed=5)
    gn = _gauss_newton(HessianOperator(model, x, y), tol=1e-3, seed=0)
    assert not gn.exact.any()
    auto, _, info = _top_eigenvalue(model, x, y, iters=64, tol=1e-8, seed=0, method="auto")
    lanczos, _, _ = _top_eigenvalue(model, x, y, iters=64, tol=1e-8, seed=0, method="auto", solver="lanczos")
    assert info["solver"] == "lanczos"
    torch.testing.assert_close(auto, lanczos, rtol=0, atol=0)
    torch.testing.assert_close(auto, _top(_dense(model, x, y)), rtol=1e-7, atol=0)


def test_probe_bound_tracks_the_size_of_the_neglected_logit_curvature():
    """bound = √D‖(H − JᵀAJ)v‖/‖v‖ estimates ‖H − JᵀAJ‖_F (the Weyl bound on any eigenvalue's shift)."""
    model = _softplus_mlp()
    x, y = _batch(12, seed=6)
    gn = _gauss_newton(HessianOperator(model, x, y), tol=1e-3, seed=0)
    jac = gn.jacobian
    a = gn_module.output_hessian(model(x))
    gauss = jac.transpose(1, 2) @ a @ jac
    rest = _dense(model, x, y) - gauss
    frob = torch.linalg.matrix_norm(rest)
    ratio = gn.bound / frob
    assert 0.3 < float(ratio.median()) < 3 and ratio.min() > 0.05
    # and the eigenvalue error of the Gauss–Newton form is within the spectral norm it stands for
    shift = (torch.linalg.eigvalsh(gauss) - torch.linalg.eigvalsh(gauss + rest)).abs().amax(1)
    assert (shift <= torch.linalg.matrix_norm(rest, ord=2) * (1 + 1e-9)).all()


def test_mixed_batch_splits_between_the_solvers_and_every_sample_is_exact():
    model = Mixed().eval()
    x, y = _batch(8, seed=7)
    x[:, 0, 0, 0] = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6], dtype=torch.float64)
    gn = _gauss_newton(HessianOperator(model, x, y), tol=1e-3, seed=0)
    assert gn.exact.tolist() == [True, False] * 4
    values, vectors, info = _top_eigenvalue(model, x, y, iters=64, tol=1e-10, seed=0, method="auto")
    assert info["solver"] == "gauss_newton+lanczos"
    torch.testing.assert_close(values, _top(_dense(model, x, y)), rtol=1e-8, atol=0)
    flat = vectors.flatten(1)
    residual = (hvp(model, x, y, vectors).flatten(1) - values[:, None] * flat).norm(dim=1) / values.abs()
    assert residual.max() < 1e-4
    eig = (torch.linalg.eigvalsh(_dense(model, x, y)) / 8).flatten()
    expected = eig[eig.abs().argsort(descending=True)[:20]]
    torch.testing.assert_close(hessian_spectrum(model, x, y, tol=1e-10), expected, rtol=1e-7, atol=0)


def test_float32_relu_net_matches_float64_dense_hessians():
    """The issue's accuracy goal, on the float32 path: ≤ 1e-3 median / 1e-2 max relative error."""
    torch.manual_seed(0)
    model = create_model("small_cnn", width=8).eval()
    x, y = _batch(16, seed=8)
    values, _ = top_eigenvalue(model, x.float(), y)
    expected = _top(_dense(model.double(), x, y))
    rel = (values.double() - expected).abs() / expected.abs()
    assert float(rel.median()) < 1e-4 and float(rel.max()) < 1e-2


def test_measure_table_shares_one_factor_between_eig_top_and_hs_and_remembers_a_smooth_net(monkeypatch):
    calls = []
    real = gn_module.factor

    def spy(*args, **kwargs):
        calls.append(args[0].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("landscape.measures.curvature._gn_factor", spy)
    x, y = _batch(6, seed=9)
    relu = measure(_relu_cnn(), x, y, eps=0.05, attack="fgsm", measures=["eig_top", "hs"], batch_size=3)
    assert calls == [3, 3] and relu.attrs["eig_solver"] == "gauss_newton"  # one factor per batch, shared
    assert relu.attrs["eig_unconverged"] == 0
    calls.clear()
    smooth = measure(_softplus_mlp(), x, y, eps=0.05, attack="fgsm", measures=["eig_top", "hs"], batch_size=3)
    assert calls == [3] and smooth.attrs["eig_solver"] == "lanczos"  # the second batch skips the test
    only_grad = measure(_relu_cnn(), x, y, eps=0.05, attack="fgsm", measures=["grad"])
    assert only_grad.attrs["eig_solver"] is None


class PoisonedRelu(nn.Module):
    """The ReLU CNN with NaN logits for every sample whose first pixel is above 0.5."""

    def __init__(self):
        super().__init__()
        self.net = _relu_cnn()

    def forward(self, x):
        bad = (x.flatten(1)[:, :1] > 0.5).to(x.dtype)
        return self.net(x) * torch.where(bad > 0, torch.full_like(bad, float("nan")), torch.ones_like(bad))


def test_nan_sample_is_left_to_lanczos_and_stays_nan():
    model = PoisonedRelu().eval()
    x, y = _batch(4, seed=10)
    x[:, 0, 0, 0] = torch.tensor([0.1, 0.9, 0.2, 0.3], dtype=torch.float64)
    gn = _gauss_newton(HessianOperator(model, x, y), tol=1e-3, seed=0)
    assert gn.exact.tolist() == [True, False, True, True]
    values, _ = top_eigenvalue(model, x, y)
    assert torch.isnan(values[1]) and torch.isfinite(values[[0, 2, 3]]).all()
    torch.testing.assert_close(values[[0, 2, 3]], top_eigenvalue(model, x[[0, 2, 3]], y[[0, 2, 3]])[0])


def test_confident_float32_samples_are_accepted_and_exact():
    """Near one-hot softmax: a float32 Hessian-vector product loses its digits to cancellation there, but the
    logit-curvature test is exactly 0 and the reduction (float64 K×K algebra) stays accurate."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    with torch.no_grad():
        model[3].weight.mul_(80)
        model[3].bias.mul_(80)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
        assert float((1 - model(x).softmax(1).amax(1)).median()) < 1e-2  # really confident
    gn = _gauss_newton(HessianOperator(model, x, y), tol=1e-3, seed=0)
    assert gn.exact.all() and (gn.bound == 0).all()
    values, _ = top_eigenvalue(model, x, y)
    import copy
    expected = _top(_dense(copy.deepcopy(model).double(), x.double(), y))
    assert float(((values.double() - expected).abs() / expected.abs()).max()) < 1e-3


def test_nearly_relu_softplus_samples_accepted_only_within_tolerance():
    """Softplus(β=1000) is close to ReLU: some samples pass the test; their top eigenvalue must then be within
    tol of the dense value (the residual of u and two probes bound the neglected term)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Softplus(beta=1000), nn.Linear(64, 10)).double().eval()
    x, y = _batch(80, seed=5)
    gn = _gauss_newton(HessianOperator(model, x, y), tol=1e-3, seed=0)
    assert 0 < int(gn.exact.sum()) < 80  # both kinds present
    dense = _dense(model, x, y)
    rel = (gn.values.abs().amax(1) - _top(dense).abs()).abs() / _top(dense).abs()
    assert float(rel[gn.exact].max()) <= 1e-3
    values, _ = top_eigenvalue(model, x, y)
    assert float(((values - _top(dense)).abs() / _top(dense).abs()).max()) <= 1e-3


def test_a_sample_with_zero_hessian_gets_a_unit_vector():
    model = _relu_cnn()
    x, y = _batch(3, seed=11)
    with torch.no_grad():
        logits = model(x)

    class Scaled(nn.Module):  # logits so far apart that the softmax is exactly one-hot in float64: H = 0
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, z):
            return 1e6 * self.net(z)

    values, vectors = top_eigenvalue(Scaled().eval(), x, logits.argmax(1))
    assert (values == 0).all()
    torch.testing.assert_close(vectors.flatten(1).norm(dim=1), torch.ones(3, dtype=torch.float64))


def test_nan_batch_does_not_switch_a_relu_table_to_lanczos():
    x, y = _batch(4, seed=12)
    x[:, 0, 0, 0] = torch.tensor([0.9, 0.1, 0.2, 0.3], dtype=torch.float64)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the NaN sample is reported as such
        df = measure(PoisonedRelu().eval(), x, y, eps=0.05, attack="fgsm", measures=["eig_top"], batch_size=1)
    assert df.attrs["eig_solver"] == "gauss_newton+lanczos"  # Lanczos for the NaN sample only
    assert df["eig_top"].isna().tolist() == [True, False, False, False]


@pytest.mark.parametrize("batched", [False, True])
def test_logit_curvature_products_equal_the_hessian_minus_its_gauss_newton_form(batched):
    model = _softplus_mlp()
    x, y = _batch(3, seed=13)
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    c = logits.detach().softmax(1) - F.one_hot(y, 10).double()
    vs = [torch.randn(x.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in range(3)]
    got = gn_module.logit_curvature_products(xr, logits, c, vs, batched=batched)
    jac = gn_module.logit_jacobian(xr, logits)
    rest = _dense(model, x, y) - jac.transpose(1, 2) @ gn_module.output_hessian(logits) @ jac
    for v, r in zip(vs, got):
        torch.testing.assert_close(r.flatten(1), torch.einsum("bij,bj->bi", rest, v.flatten(1)), rtol=1e-9, atol=1e-12)
    relu = _relu_cnn()
    xr2 = x.clone().requires_grad_(True)
    zero = gn_module.logit_curvature_products(xr2, relu(xr2), c, vs, batched=batched)
    assert all((r == 0).all() for r in zero)


def test_func_hvp_method_is_kept_across_batches_when_the_gauss_newton_solver_serves(monkeypatch):
    """The test's double backwards never change the table's Hessian-vector-product method."""
    from landscape.measures import _autograd

    built = []
    real = _autograd.gradient_graph
    monkeypatch.setattr(_autograd, "gradient_graph", lambda *a: built.append(1) or real(*a))
    x, y = _batch(9, seed=14)
    df = measure(_relu_cnn(), x, y, eps=0.05, attack="fgsm", measures=["curv_rand", "eig_top"], batch_size=3,
                 hvp_method="func")
    assert df.attrs["hvp_method"] == "func" and df.attrs["eig_solver"] == "gauss_newton" and built == []
    auto = measure(_relu_cnn(), x, y, eps=0.05, attack="fgsm", measures=["eig_top"], batch_size=3)
    assert auto.attrs["hvp_method"] == "double_backprop"
    torch.testing.assert_close(torch.tensor(df["eig_top"].to_numpy()), torch.tensor(auto["eig_top"].to_numpy()),
                               rtol=1e-10, atol=0)
