"""Weight-space measures against dense references: the weight Hessian (autograd on the flattened parameters),
its top eigenvalue, trace and density; Stutz flatness and AWP; exact restoration of the model; the table and
the trajectory with ``w_*`` columns."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape import create_model, measure
from landscape._base import derive_seed
from landscape.attacks import AttackSettings, run_attack
from landscape.measures import registry, weight_flatness, weight_hessian
from landscape.measures.spec import STREAM_ATTACK, at_adv
from landscape.measures.weight_flatness import ProbeBatch, awp_loss, flatness_average, flatness_worst
from landscape.measures.weight_hessian import (WeightHessian, hutchinson_trace, preserved, select_parameters,
                                               spectral_density, top_eigenvalues)

D, H, K = 12, 6, 3  # 12 inputs (1x3x4), 6 hidden, 3 classes: 99 weights (+ BN: 111)


def _net(bn: bool = False, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers = [nn.Flatten(), nn.Linear(D, H)]
        if bn:
            layers.append(nn.BatchNorm1d(H))
        layers += [nn.Tanh(), nn.Linear(H, K)]
        net = nn.Sequential(*layers).double()
        if bn:  # non-trivial running statistics
            net.train()
            with torch.no_grad():
                net(torch.rand(32, 1, 3, 4, dtype=torch.float64) * 2)
        return net.eval()


def _data(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 3, 4, generator=g, dtype=torch.float64), torch.randint(0, K, (n,), generator=g)


def _dense(model: nn.Module, batches, names=None) -> torch.Tensor:
    """The Hessian of the mean loss over all batches w.r.t. the flattened parameters ``names``, by
    torch.autograd.functional.hessian (the independent reference)."""
    params = dict(model.named_parameters())
    names = list(params) if names is None else names
    shapes, sizes = [params[n].shape for n in names], [params[n].numel() for n in names]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])

    def loss(flat):
        values = {n: p.view(s) for n, p, s in zip(names, torch.split(flat, sizes), shapes)}
        return F.cross_entropy(torch.func.functional_call(model, values, (x,)), y)

    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    return torch.autograd.functional.hessian(loss, flat)


def _batches(n=(5, 3)):
    x, y = _data(sum(n))
    return list(zip(torch.split(x, list(n)), torch.split(y, list(n))))


def _snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
            [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


def _assert_same(model: nn.Module, snap) -> None:
    state, modes, flags = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]) and v.dtype == state[k].dtype, k  # bit-identical
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------ the operator


def test_hvp_equals_the_dense_hessian_and_finite_differences_of_gradients():
    model, batches = _net(bn=True), _batches((5, 3))
    op = WeightHessian(model, batches)
    dense = _dense(model, batches)
    assert op.n == dense.shape[0] == 111
    g = torch.Generator().manual_seed(0)
    v = torch.randn(op.n, generator=g, dtype=torch.float64)
    torch.testing.assert_close(op(v), dense @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.dense(), dense, rtol=1e-10, atol=1e-12)
    # central differences of the probe gradient: (g(w + hv) − g(w − hv)) / 2h
    names = op.names
    h = 1e-5
    params = dict(model.named_parameters())
    grads = []
    for sign in (1, -1):
        with preserved(model):
            with torch.no_grad():
                for p, d in zip([params[n] for n in names], op.unflatten(sign * h * v)):
                    p.add_(d)
            grads.append(op.flatten(weight_hessian.probe_loss_grad(model, op.batches, names)[1]))
    torch.testing.assert_close((grads[0] - grads[1]) / (2 * h), op(v), rtol=1e-6, atol=1e-8)


def test_layer_selection_is_the_dense_sub_block_and_a_miss_names_the_parameters():
    model, batches = _net(), _batches()
    op = WeightHessian(model, batches, layers="3.*")
    assert op.names == ["3.weight", "3.bias"]
    torch.testing.assert_close(op.dense(), _dense(model, batches, op.names), rtol=1e-10, atol=1e-12)
    assert select_parameters(model, "1.weight, 3.bias") == ["1.weight", "3.bias"]
    with pytest.raises(ValueError, match=r"fc2\.\*.*available: 1\.weight, 1\.bias, 3\.weight, 3\.bias"):
        WeightHessian(model, batches, layers="fc2.*")


def test_top_eigenvalues_equal_the_dense_spectrum():
    model, batches = _net(bn=True), _batches()
    dense = torch.linalg.eigvalsh(_dense(model, batches))
    r = top_eigenvalues(WeightHessian(model, batches), 3, tol=1e-10, max_steps=111, seed=4)
    assert r.converged and r.values.shape == (3,) and r.steps <= 111
    torch.testing.assert_close(r.values, dense[-3:].flip(0), rtol=1e-6, atol=0)
    assert (r.residuals <= 1e-10 * r.values.abs()).all()
    # the reported residual is the true one: ‖H u − θ u‖
    op = WeightHessian(model, batches)
    true = (op(r.vectors[0]) - r.values[0] * r.vectors[0]).norm()
    assert float(true) <= 1e-8 * float(r.values[0])
    loose = top_eigenvalues(op, 1, tol=1e-2, seed=4)
    assert loose.steps < r.steps and abs(float(loose.values[0]) / float(dense[-1]) - 1) < 1e-3


def test_hutchinson_trace_is_within_its_standard_error_and_converges():
    model, batches = _net(), _batches()
    exact = float(torch.trace(_dense(model, batches)))
    op = WeightHessian(model, batches)
    small = hutchinson_trace(op, rtol=1e-9, min_samples=10, max_samples=20, seed=1)
    big = hutchinson_trace(op, rtol=1e-9, min_samples=10, max_samples=320, seed=1)
    assert small.samples == 20 and big.samples == 320 and not big.converged
    for r in (small, big):
        assert abs(r.trace - exact) <= 3 * r.se
    assert big.se < small.se / 2.5  # 1/sqrt(samples)
    stopped = hutchinson_trace(op, rtol=0.25, seed=1)  # a tiny net's trace is small beside its off-diagonal
    assert stopped.converged and stopped.se <= 0.25 * abs(stopped.trace) and 10 <= stopped.samples < 200


def test_density_integrates_to_one_and_has_the_dense_moments():
    model, batches = _net(), _batches()
    dense = torch.linalg.eigvalsh(_dense(model, batches))
    n = dense.numel()
    d = spectral_density(WeightHessian(model, batches), runs=24, steps=n, seed=0)
    t, p = d.table["grid"].to_numpy(), d.table["density"].to_numpy()
    assert list(d.table.columns) == ["grid", "density"] and (p >= 0).all()
    assert np.trapezoid(p, t) == pytest.approx(1.0, abs=1e-12)
    m1 = np.trapezoid(p * t, t)
    m2 = np.trapezoid(p * t ** 2, t) - d.sigma ** 2  # the Gaussian broadening adds sigma² to the second moment
    exact_m1, exact_m2 = float(dense.sum()) / n, float((dense ** 2).sum()) / n
    # the mean is small beside the spread here: compare it on the spread's scale (its SE is ~0.03·√m2 at 24 runs)
    assert abs(m1 - exact_m1) <= 0.1 * math.sqrt(exact_m2)
    assert m2 == pytest.approx(exact_m2, rel=0.1)
    assert m1 == pytest.approx(d.mean, rel=1e-3)
    assert d.negative_mass == pytest.approx(float((d.weights * (d.nodes < 0)).sum()) / 24)
    # with full-length runs the nodes are the eigenvalues themselves
    assert d.nodes.max() == pytest.approx(float(dense[-1]), rel=1e-8)


# ------------------------------------------------------------------------------------------ flatness, AWP

SETTINGS = AttackSettings("pgd", 0.1, 3)


def _probe(model, n=(6, 4)) -> list[ProbeBatch]:
    out = []
    for i, (x, y) in enumerate(_batches(n)):
        x_adv, _ = run_attack(model, x, y, SETTINGS, seed=100 + i)
        out.append(ProbeBatch(x, y, x_adv, 100 + i))
    return out


def _robust_loss(model, probe) -> float:
    with torch.no_grad():
        x, y = torch.cat([b.x_adv for b in probe]), torch.cat([b.y for b in probe])
        return float(F.cross_entropy(model(x), y))


def test_zero_radius_gives_zero_and_the_robust_loss_is_at_the_given_x_adv():
    model = _net(bn=True)
    probe = _probe(model)
    base = _robust_loss(model, probe)
    avg = flatness_average(model, probe, xi=0.0, samples=3)
    worst = flatness_worst(model, probe, SETTINGS, xi=0.0, steps=2)
    awp = awp_loss(model, probe, gamma=0.0)
    assert avg.value == 0.0 and worst.value == 0.0 and awp.value == 0.0
    assert avg.loss == pytest.approx(base, rel=1e-12) and awp.perturbed == pytest.approx(base, rel=1e-12)
    # the robust Hessian is the Hessian at the given x_adv (not at x)
    op = WeightHessian(model, [(b.x_adv, b.y) for b in probe])
    torch.testing.assert_close(op.dense(), _dense(model, [(b.x_adv, b.y) for b in probe]), rtol=1e-10, atol=1e-12)


def test_worst_case_exceeds_average_case_and_awp_follows_its_definition():
    model = _net()
    probe = _probe(model)
    avg = flatness_average(model, probe, xi=0.05, samples=20, seed=3)
    worst = flatness_worst(model, probe, SETTINGS, xi=0.05, steps=3)
    assert worst.value > avg.value + 2 * avg.se and worst.value > 0
    # AWP by hand: one step gamma·|w_l|·g_l/|g_l| on the 2-d weights only, loss at the same x_adv
    gamma = 5e-3
    params = dict(model.named_parameters())
    x, y = torch.cat([b.x_adv for b in probe]), torch.cat([b.y for b in probe])
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    grads = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(model, leaves, (x,)), y),
                                [leaves[n] for n in params])
    moved = {n: (p.detach() + gamma * p.detach().norm() * g / g.norm()) if p.dim() > 1 else p.detach()
             for (n, p), g in zip(params.items(), grads)}
    with torch.no_grad():
        want = float(F.cross_entropy(torch.func.functional_call(model, moved, (x,)), y))
    got = awp_loss(model, probe, gamma=gamma)
    assert got.perturbed == pytest.approx(want, rel=1e-10) and got.value > 0
    # a layer pattern restricts the perturbation
    assert flatness_worst(model, probe, SETTINGS, xi=0.05, steps=2, layers="3.*").value < worst.value


def test_every_measure_restores_the_model_bit_identically_also_when_it_raises(monkeypatch):
    model = _net(bn=True)
    model.train()
    model[2].eval()  # mixed modes are restored per submodule
    probe = _probe(model)
    snap = _snapshot(model)
    rng = torch.get_rng_state()
    batches = [(b.x, b.y) for b in probe]
    top_eigenvalues(WeightHessian(model, batches), 2, seed=1)
    hutchinson_trace(WeightHessian(model, batches), max_samples=12, seed=1)
    spectral_density(WeightHessian(model, batches), runs=2, steps=10)
    flatness_average(model, probe, xi=0.3, samples=2)
    flatness_worst(model, probe, SETTINGS, xi=0.01, steps=2)
    awp_loss(model, probe)
    _assert_same(model, snap)
    assert torch.equal(torch.get_rng_state(), rng)

    # inject a failure after the weights were perturbed in place
    real = weight_flatness.probe_loss

    def failing(m, b):
        if not torch.equal(dict(m.named_parameters())["1.weight"], snap[0]["1.weight"]):  # perturbed now
            raise RuntimeError("injected")
        return real(m, b)

    monkeypatch.setattr(weight_flatness, "probe_loss", failing)
    for call in (lambda: flatness_average(model, probe, xi=0.3, samples=3),
                 lambda: awp_loss(model, probe)):
        with pytest.raises(RuntimeError, match="injected"):
            call()
        _assert_same(model, snap)
    monkeypatch.setattr(weight_flatness, "probe_loss", real)
    monkeypatch.setattr(weight_flatness, "run_attack", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("injected")))
    with pytest.raises(RuntimeError, match="injected"):
        flatness_worst(model, probe, SETTINGS, xi=0.01, steps=3)
    _assert_same(model, snap)


# ------------------------------------------------------------------------------------------ registry, table


def test_weight_measures_are_registered_per_model_and_opt_in():
    names = ["w_eig_top", "w_trace", "w_density", "w_flat_avg", "w_flat_worst", "w_awp"]
    assert set(names) <= set(registry.MEASURES) and not set(names) & set(registry.DEFAULT_MEASURES)
    for name in names:
        spec = registry.get(name)
        assert spec.scope == "model" and spec.columns[0].startswith("w_")
        assert set(spec.labels) == set(spec.units) == set(spec.columns)
        with pytest.raises(ValueError, match="no x_adv variant"):
            at_adv(spec)
    assert registry.get("w_trace").columns == ("w_trace", "w_trace_se", "w_trace_clean", "w_trace_clean_se")
    assert registry.get("grad").scope == "sample"


def test_table_writes_each_weight_measure_once_from_its_own_attack():
    model = create_model("mlp", input_shape=(1, 3, 4), hidden=(5,), num_classes=K, activation="tanh").double()
    x, y = _data(10, seed=7)
    snap = _snapshot(model)
    df = measure(model, x, y, settings=SETTINGS, measures=["grad", "w_trace", "w_awp", "w_flat_worst"],
                 batch_size=4, seed=2, weight_probe=6)
    _assert_same(model, snap)
    assert df.attrs["weight_probe"] == 6 and df.attrs["weight_layers"] is None and df.attrs["nonfinite"] == 0
    for c in ("w_trace", "w_trace_se", "w_trace_clean", "w_awp", "w_awp_gap", "w_flat_worst"):
        assert df[c].nunique() == 1, c  # one value per table, on every row
    # the reference: the first 6 samples with the table's own x_adv (batches of 4: 4 + 2)
    probe = []
    for b, (lo, hi) in enumerate([(0, 4), (4, 8)]):
        seed = derive_seed(2, b, STREAM_ATTACK)
        x_adv, _ = run_attack(model, x[lo:hi], y[lo:hi], SETTINGS, seed=seed)
        keep = min(hi, 6) - lo
        probe.append(ProbeBatch(x[lo:lo + keep], y[lo:lo + keep], x_adv[:keep], seed))
    assert df["loss_adv"][:6].mean() == pytest.approx(_robust_loss(model, probe), rel=1e-12)
    awp = awp_loss(model, probe)
    assert df["w_awp"][0] == pytest.approx(awp.perturbed, rel=1e-12)
    assert df["w_awp_gap"][0] == pytest.approx(awp.value, rel=1e-9)
    worst = flatness_worst(model, probe, SETTINGS, steps=5)
    assert df["w_flat_worst"][0] == pytest.approx(worst.value, rel=1e-9, abs=1e-15)
    # L2 random starts depend on the batch size: a cut batch is attacked again alone, so re-attacking it with its
    # seed (what w_flat_worst does at the perturbed weights) reproduces its x_adv, and zero radius gives 0
    l2 = AttackSettings("pgd", 0.5, 3, norm="l2")
    df2 = measure(model, x, y, settings=l2, measures=["w_flat_worst"], batch_size=4, seed=2, weight_probe=6)
    cut = []
    for b, (lo, hi) in enumerate([(0, 4), (4, 6)]):
        seed = derive_seed(2, b, STREAM_ATTACK)
        cut.append(ProbeBatch(x[lo:hi], y[lo:hi], run_attack(model, x[lo:hi], y[lo:hi], l2, seed=seed)[0], seed))
    assert df2["w_flat_worst"][0] == pytest.approx(flatness_worst(model, cut, l2, steps=5).value, rel=1e-9, abs=1e-15)
    assert flatness_worst(model, cut, l2, xi=0.0, steps=2).value == 0.0
    _assert_same(model, snap)
    layered = measure(model, x, y, settings=SETTINGS, measures=["w_awp"], batch_size=4, seed=2, weight_probe=6,
                      weight_layers="net.3.*")
    assert layered.attrs["weight_layers"] == "net.3.*"
    assert layered["w_awp"][0] == pytest.approx(awp_loss(model, probe, layers="net.3.*").perturbed, rel=1e-12)
    with pytest.raises(ValueError, match="matches no parameter"):
        measure(model, x, y, settings=SETTINGS, measures=["w_awp"], weight_layers="fc9.*")


def test_trajectory_with_weight_measures_end_to_end(tmp_path):
    from landscape.trajectory import analyse_trajectory

    run = tmp_path / "run"
    run.mkdir()
    for e in (1, 2):
        torch.manual_seed(e)
        model = create_model("mlp", hidden=(4,), activation="tanh")
        torch.save({"state_dict": model.state_dict(), "epoch": e}, run / f"e{e}.pt")
    measures = ["grad", "curv_adv", "w_eig_top", "w_trace", "w_flat_avg", "w_flat_worst"]
    table = analyse_trajectory(run, "mlp", out_dir=tmp_path / "out", arch_kwargs={"hidden": (4,), "activation": "tanh"},
                               n=8, steps=1, eps=0.1, measures=measures, batch_size=8, progress=False,
                               splits=("test",))
    assert table["error"].isna().all() and len(table) == 2
    for c in ("w_eig_top_mean", "w_eig_top_clean_mean", "w_trace_mean", "w_trace_se_mean", "w_flat_avg_mean",
              "w_flat_worst_mean", "grad_l2_mean", "curv_adv_mean"):
        assert np.isfinite(table[c]).all(), c
    # a constant column: its summaries are the value itself
    assert (table["w_trace_mean"] == table["w_trace_q10"]).all()
    assert table["w_eig_top_mean"].iloc[0] != table["w_eig_top_mean"].iloc[1]
    assert math.isfinite(float(table["w_flat_worst_mean"].iloc[0]))


def test_the_package_never_imports_pyhessian():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "landscape"
    offenders = [str(p) for p in root.rglob("*.py")
                 if re.search(r"^\s*(import|from)\s+pyhessian\b", p.read_text(), flags=re.M)]
    assert offenders == []


def test_the_docs_pyhessian_block_is_what_the_committed_csv_produces():
    """docs/measures.md's weight-space block is benchmarks/bench_weight_space.py's rendering of its CSV, and the
    committed numbers keep the claims the docs make: traces agree within 3 SE, eigenvalues to pyhessian's error."""
    import importlib
    import pathlib
    import sys

    import pandas as pd

    root = pathlib.Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        bench = importlib.import_module("bench_weight_space")
    finally:
        sys.path.remove(str(root / "benchmarks"))
    df = pd.read_csv(root / "benchmarks" / "results" / "weight_space_cpu.csv")
    text = (root / "docs" / "measures.md").read_text()
    assert f"{bench.BEGIN}\n{bench.markdown(df)}{bench.END}" in text
    trace = df[df["quantity"] == "trace"]
    assert trace["agree_3se"].all()
    eig = df[df["quantity"] == "top eigenvalue"]
    assert (eig["landscape_rel_err"] <= eig["pyhessian_rel_err"]).all() and (eig["landscape_rel_err"] < 1e-5).all()
