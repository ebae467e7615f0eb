"""Numerical health: NaN/Inf are counted and reported, never masked or spread; float64 mode is exact.

* A sample whose logits are NaN gets NaN in every measure column (never a plausible finite number such as a
  curvature of 0 or "correct"), the count of NaN/Inf values is in ``df.attrs["nonfinite"]`` with a warning,
  and the other samples of the batch are untouched.
* The trajectory table's ``nonfinite`` column counts them per (epoch, split); its statistics use the finite
  values only.
* ``measure(..., dtype=torch.float64)`` computes on a float64 copy (the caller's model is untouched) and
  agrees with the autograd Hessian / direct evaluation to ~1e-10, and with finite differences.
"""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape import create_model
from landscape.attacks import fgsm, pgd
from landscape.measures import measure

POISON_PIXEL = 0.9  # first pixel value of the samples whose logits the Poisoned model turns into NaN


class Poisoned(nn.Module):
    """A smooth MLP whose logits are NaN for every sample with first pixel > 0.5, finite for the others.

    The NaN enters through a constant per-sample factor, so no NaN reaches the other samples' gradients.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = create_model("mlp", hidden=(12,), activation="softplus")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = (x.flatten(1)[:, :1] > 0.5).to(x.dtype)
        scale = torch.where(bad > 0, torch.full_like(bad, math.nan), torch.ones_like(bad))
        return self.net(x) * scale


def _batch(poisoned: list[bool], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs in [0.2, 0.8] with the first pixel set to 0.9 (poisoned) or 0.1, out of reach of eps <= 0.1."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(len(poisoned), 1, 8, 8, generator=g)
    x[:, 0, 0, 0] = torch.tensor([POISON_PIXEL if p else 0.1 for p in poisoned])
    y = torch.arange(len(poisoned)) % 10  # sample 0 has label 0: torch's argmax of all-NaN logits is 0
    return x, y


def _float_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if pd.api.types.is_float_dtype(df[c])]


# ------------------------------------------------------------------------------------------------ NaN / Inf


@pytest.mark.parametrize("attack, norm", [("fgsm", "linf"), ("pgd", "linf"), ("pgd", "l2")])
def test_nan_logits_are_counted_and_every_measure_of_that_sample_is_nan(attack, norm):
    poisoned = [True, False, False, True, False]
    x, y = _batch(poisoned)
    model = Poisoned().eval()
    with pytest.warns(RuntimeWarning, match="NaN/Inf") as record:
        df = measure(model, x, y, eps=0.05, attack=attack, norm=norm, steps=2, eig_iters=3, batch_size=2,
                     measures="grad,curv_adv,curv_rand,eig_top,taylor_gap,logit_var")
    floats = _float_columns(df)
    assert set(floats) >= {"loss_clean", "loss_adv", "grad_l2", "curv_adv", "curv_rand", "eig_top", "taylor_gap",
                           "logit_var"}
    values = df[floats].to_numpy()
    bad = np.array(poisoned)
    assert (~np.isfinite(values[bad])).all(), df[bad].T  # nothing of a NaN sample looks like a number
    assert np.isfinite(values[~bad]).all(), df[~bad].T  # and the NaN reached no other sample
    assert not df.loc[bad, ["correct_clean", "correct_adv"]].to_numpy().any()  # NaN is never "correct"
    expected = int(bad.sum()) * len(floats)
    assert df.attrs["nonfinite"] == expected
    assert any(str(expected) in str(w.message) for w in record)


def test_nan_samples_do_not_change_the_other_samples_numbers():
    """Measured with NaN neighbours in its batch, a healthy sample gets the numbers it gets alone."""
    poisoned = [True, False, True, False]
    x, y = _batch(poisoned)
    model = Poisoned().eval()
    with pytest.warns(RuntimeWarning):
        mixed = measure(model, x, y, eps=0.05, attack="fgsm", measures=["grad", "curv_adv", "taylor_gap",
                                                                            "logit_var"], batch_size=4)
    keep = [i for i, p in enumerate(poisoned) if not p]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NaN here: no warning either
        alone = measure(model, x[keep], y[keep], eps=0.05, attack="fgsm",
                        measures=["grad", "curv_adv", "taylor_gap", "logit_var"], batch_size=4)
    assert alone.attrs["nonfinite"] == 0
    cols = [c for c in alone.columns if c != "sample"]
    pd.testing.assert_frame_equal(mixed.loc[keep, cols].reset_index(drop=True), alone[cols], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attack_on_a_nan_gradient_returns_nan_not_the_clean_input(attack, norm):
    """torch.sign(NaN) is 0: without care a NaN gradient would look like a successful zero perturbation."""
    poisoned = [False, True, False]
    x, y = _batch(poisoned)
    model = Poisoned().eval()
    if attack == "fgsm":
        x_adv, delta = fgsm(model, x, y, 0.05, norm=norm)
    else:
        x_adv, delta = pgd(model, x, y, 0.05, steps=3, norm=norm)
    assert torch.isnan(x_adv[1]).all() and torch.isnan(delta[1]).all()
    assert torch.isfinite(x_adv[[0, 2]]).all()
    assert float((x_adv[[0, 2]] - x[[0, 2]]).abs().max()) > 0  # the healthy samples were attacked


def test_saturated_logits_stay_finite():
    """Huge but finite logits (weights x 1e3): stable log-softmax, zero-gradient directions, no 0/0."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = create_model("mlp", hidden=(12,), activation="softplus")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e3)
    x, y = _batch([False] * 6, seed=1)
    with torch.no_grad():
        assert float(model(x).abs().max()) > 1e4  # really saturated
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        df = measure(model.eval(), x, y, eps=0.05, steps=2, eig_iters=3, norm="l2")
    assert df.attrs["nonfinite"] == 0
    assert np.isfinite(df[_float_columns(df)].to_numpy()).all()
    # the loss at a saturated wrong prediction is the logit gap itself, not inf
    with torch.no_grad():
        logits = model(x).double()
    ref = (logits.logsumexp(1) - logits.gather(1, y[:, None]).squeeze(1)).numpy()
    np.testing.assert_allclose(df["loss_clean"].to_numpy(), ref, rtol=1e-5, atol=1e-3)


def test_unconverged_power_iterations_are_reported():
    x, y = _batch([False] * 5, seed=2)
    model = Poisoned(seed=1).eval()
    one = measure(model, x, y, eps=0.05, measures=["eig_top"], eig_iters=1)
    assert one.attrs["eig_unconverged"] == 5  # one step cannot show convergence
    many = measure(model, x, y, eps=0.05, measures=["eig_top"], eig_iters=300)
    assert 0 <= many.attrs["eig_unconverged"] < 5


# ------------------------------------------------------------------------------------------------ trajectory


def test_trajectory_summary_counts_nonfinite_and_uses_finite_values_only():
    from landscape.trajectory import summarise_samples

    inf, nan = math.inf, math.nan
    samples = pd.DataFrame({
        "split": ["test"] * 4 + ["train"] * 2,
        "sample": [0, 1, 2, 3, 0, 1],
        "label": [0, 1, 2, 3, 0, 1],
        "loss_clean": [1.0, nan, 3.0, inf, 0.5, 1.5],
        "loss_adv": [2.0, 2.0, 2.0, -inf, 1.0, 1.0],
        "correct_clean": [True, False, True, False, True, True],
        "correct_adv": [False, False, True, False, True, False],
        "grad_l1": [1.0, 2.0, nan, 4.0, 2.0, 2.0],
    })
    s = summarise_samples(samples).set_index("split")
    assert s.loc["test", "nonfinite"] == 4 and s.loc["train", "nonfinite"] == 0
    assert s.loc["test", "loss_clean"] == pytest.approx(2.0)  # mean of 1 and 3
    assert s.loc["test", "loss_adv"] == pytest.approx(2.0)
    assert s.loc["test", "grad_l1_mean"] == pytest.approx(7 / 3)
    assert s.loc["test", "grad_l1_median"] == pytest.approx(2.0)
    assert s.loc["test", "acc_clean"] == pytest.approx(0.5) and s.loc["train", "acc_adv"] == pytest.approx(0.5)
    assert s.loc["test", "n"] == 4


def test_trajectory_reports_a_nan_checkpoint_in_nonfinite(tmp_path):
    from landscape.checkpoints import save_checkpoint
    from landscape.trajectory import analyse_trajectory

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("mlp", hidden=(16,))
    save_checkpoint(tmp_path / "ck" / "e1.pt", model, epoch=1)
    with torch.no_grad():
        model.net[1].weight[0, 0] = math.nan  # a diverged training step
    save_checkpoint(tmp_path / "ck" / "e2.pt", model, epoch=2)
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        table = analyse_trajectory(tmp_path / "ck", "mlp", out_dir=tmp_path / "out", arch_kwargs={"hidden": (16,)},
                                   n=20, steps=1, measures=["grad", "curv_adv"], splits=["test"], progress=False)
    rows = table.set_index("epoch")
    per_sample = 2 + 3 + 1  # loss_clean, loss_adv, grad_l1/l2/linf, curv_adv
    assert rows.loc[1, "nonfinite"] == 0 and rows.loc[2, "nonfinite"] == 20 * per_sample
    assert rows["error"].isna().all()  # not a failure: a reported numerical state
    assert rows.loc[2, "acc_clean"] == 0.0  # NaN logits are never counted as correct
    assert math.isnan(rows.loc[2, "loss_clean"]) and math.isfinite(rows.loc[1, "loss_clean"])


# ------------------------------------------------------------------------------------------------ float64 mode


def _smooth_model(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_model("mlp", input_shape=(1, 3, 3), hidden=(10,), num_classes=4, activation="softplus").eval()


def _hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    def loss(flat):
        return F.cross_entropy(model(flat.reshape(1, *x.shape)), y[None])

    return torch.autograd.functional.hessian(loss, x.flatten())


def test_float64_mode_matches_the_autograd_hessian_and_leaves_the_model_alone():
    model = _smooth_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # the caller's mode must come back as it was
    g = torch.Generator().manual_seed(0)
    x = 0.1 + 0.8 * torch.rand(5, 1, 3, 3, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0])
    df = measure(model, x, y, eps=0.1, attack="fgsm", dtype=torch.float64, eig_iters=200,
                 measures="grad,curv_adv,curv_rand,eig_top,taylor_gap,logit_var")

    assert df.attrs["dtype"] == "float64" and df.attrs["nonfinite"] == 0
    assert model.training and all(p.dtype == torch.float32 and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    model64 = copy.deepcopy(model).eval().double()
    x64 = x.double()
    _, delta = fgsm(model64, x64, y, 0.1)
    for i in range(len(y)):
        H = _hessian(model64, x64[i], y[i])
        d = delta[i].flatten()
        assert df["curv_adv"][i] == pytest.approx(float(d @ H @ d / (d @ d)), rel=1e-9, abs=1e-12)
        eig = torch.linalg.eigvalsh(H)
        top = eig[eig.abs().argmax()]
        gap = float(eig.abs().sort(descending=True).values[1] / top.abs())
        assert abs(df["eig_top"][i]) <= float(eig.abs().max()) * (1 + 1e-9)
        if gap < 0.5:
            assert df["eig_top"][i] == pytest.approx(float(top), rel=1e-3)
        xi = x64[i:i + 1].clone().requires_grad_(True)
        loss = F.cross_entropy(model64(xi), y[i:i + 1])
        (grad,) = torch.autograd.grad(loss, xi)
        with torch.no_grad():
            moved = F.cross_entropy(model64(xi + delta[i:i + 1]), y[i:i + 1])
        gap_ref = float(moved - loss.detach() - (grad * delta[i:i + 1]).sum())
        assert df["taylor_gap"][i] == pytest.approx(gap_ref, rel=1e-9, abs=1e-14)
        assert df["grad_l2"][i] == pytest.approx(float(grad.norm()), rel=1e-12)


def test_float64_curvature_agrees_with_finite_differences_float32_does_not_need_to():
    """The second difference (L(x+hu) - 2L(x) + L(x-hu)) / h^2 is only meaningful in float64: there it equals
    curv_adv to ~1e-6; the float32 result agrees with float64 to float32 precision."""
    model = _smooth_model(seed=1)
    g = torch.Generator().manual_seed(1)
    x = 0.1 + 0.8 * torch.rand(4, 1, 3, 3, generator=g)
    y = torch.tensor([3, 2, 1, 0])
    d64 = measure(model, x, y, eps=0.1, attack="fgsm", measures=["curv_adv"], dtype=torch.float64)
    d32 = measure(model, x, y, eps=0.1, attack="fgsm", measures=["curv_adv"])
    assert d32.attrs["dtype"] == "float32"

    model64 = copy.deepcopy(model).double()
    _, delta = fgsm(model64, x.double(), y, 0.1)
    h = 1e-4
    for i in range(len(y)):
        u = delta[i] / delta[i].norm()

        def L(t):
            with torch.no_grad():
                return float(F.cross_entropy(model64((x[i].double() + t * u)[None]), y[i:i + 1]))

        fd = (L(h) - 2 * L(0.0) + L(-h)) / h**2
        assert d64["curv_adv"][i] == pytest.approx(fd, rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(d32["curv_adv"], d64["curv_adv"], rtol=1e-3, atol=1e-5)



def test_slices_report_nan_logits_as_nan_and_not_correct():
    from landscape.slices import grid, slice_1d

    x, y = _batch([True, False])  # sample 0: label 0, NaN logits everywhere within 0.05 of it
    df = slice_1d(Poisoned().eval(), x, y, "random", grid(0.05, 3))
    nan_rows, ok_rows = df[df["sample"] == 0], df[df["sample"] == 1]
    assert nan_rows["loss"].isna().all() and nan_rows["margin"].isna().all()
    assert not nan_rows["correct"].any()  # torch's argmax picks the NaN (class 0): not a correct prediction
    assert np.isfinite(ok_rows[["loss", "margin"]].to_numpy()).all()
