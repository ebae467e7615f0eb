"""Tests for landscape.measure (the per-sample table) and the `landscape measure` command."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape import MEASURES, create_model, measure
from landscape.testing import clean_trained_mlp
from landscape.measures import DEFAULT_MEASURES
from landscape.attacks import fgsm
from landscape.measures import (directional_curvature, gradient_norms, logit_variation, taylor_gap)
from landscape.measures.table import columns

ALL_COLUMNS = ["sample", "label", "loss_clean", "loss_adv", "correct_clean", "correct_adv",
               "grad_l1", "grad_l2", "grad_linf", "curv_adv", "curv_rand", "eig_top", "taylor_gap", "logit_var"]


@pytest.fixture(scope="module")
def digits():
    from landscape.datasets import load_dataset

    x_tr, y_tr = load_dataset("digits", "train")
    x_te, y_te = load_dataset("digits", "test", n=60)
    model = clean_trained_mlp(x_tr, y_tr, hidden=(32,))
    return model.eval(), x_te, y_te


def test_columns_and_dtypes(tiny_model):
    x, y = torch.rand(5, 1, 8, 8), torch.arange(5)
    six = ["grad", "curv_adv", "curv_rand", "eig_top", "taylor_gap", "logit_var"]
    df = measure(tiny_model, x, y, eps=0.1, steps=2, eig_iters=2, measures=six)
    assert list(df.columns) == ALL_COLUMNS == columns(six)
    assert columns() == [c for c in ALL_COLUMNS if c != "eig_top"]  # the default set leaves out eig_top
    assert DEFAULT_MEASURES == ("grad", "curv_adv", "curv_rand", "taylor_gap", "logit_var")
    assert set(DEFAULT_MEASURES) < set(MEASURES) and {"hs", "hs_at_adv"} <= set(MEASURES)
    assert df["sample"].tolist() == [0, 1, 2, 3, 4] and df["label"].tolist() == [0, 1, 2, 3, 4]
    assert df["correct_clean"].dtype == bool and df["loss_adv"].dtype == np.float64
    assert df.attrs["nonfinite"] == 0 and df.attrs["hvp_method"] == "double_backprop"
    sub = measure(tiny_model, x, y, eps=0.1, steps=2, measures="logit_var, grad")  # order follows MEASURES
    assert list(sub.columns) == ALL_COLUMNS[:9] + ["logit_var"]
    assert sub.attrs["hvp_method"] is None


def test_values_equal_direct_evaluation_of_each_measure(digits):
    """With FGSM (deterministic) every column can be recomputed with the public per-sample functions."""
    model, x, y = digits
    model64 = create_model("mlp", hidden=(32,), activation="softplus").double()
    model64.load_state_dict(model.state_dict())
    x64 = x.double()
    eps = 0.05
    df = measure(model, x, y, eps=eps, attack="fgsm", batch_size=16, eig_iters=200, dtype=torch.float64,
                 measures="grad,curv_adv,curv_rand,eig_top,taylor_gap,logit_var")
    assert df.attrs["dtype"] == "float64"
    x_adv, delta = fgsm(model64.eval(), x64, y, eps)
    with torch.no_grad():
        logits, logits_adv = model64(x64), model64(x_adv)
    expect = {
        "loss_clean": F.cross_entropy(logits, y, reduction="none"),
        "loss_adv": F.cross_entropy(logits_adv, y, reduction="none"),
        "curv_adv": directional_curvature(model64, x64, y, delta),
        "taylor_gap": taylor_gap(model64, x64, y, delta),
        "logit_var": logit_variation(model64, x64, x_adv),
        **gradient_norms(model64, x64, y),
    }
    for col, values in expect.items():
        np.testing.assert_allclose(df[col].to_numpy(), values.numpy(), rtol=1e-9, atol=1e-12, err_msg=col)
    np.testing.assert_array_equal(df["correct_clean"], (logits.argmax(1) == y).numpy())
    np.testing.assert_array_equal(df["correct_adv"], (logits_adv.argmax(1) == y).numpy())
    # eig_top against the full 64x64 autograd Hessian of a few samples (largest |eigenvalue|)
    for i in range(4):
        hess = torch.autograd.functional.hessian(
            lambda z: F.cross_entropy(model64(z.reshape(1, 1, 8, 8)), y[i:i + 1]), x64[i].flatten())
        eig = torch.linalg.eigvalsh(hess)
        top = eig[eig.abs().argmax()]
        assert df["eig_top"][i] == pytest.approx(float(top), rel=1e-3)
    # curv_rand is the directional curvature along a ±1 direction
    assert ((df["curv_rand"] != df["curv_adv"]) & np.isfinite(df["curv_rand"])).all()


def test_trained_model_adversarial_loss_and_accuracy(digits):
    model, x, y = digits
    df = measure(model, x, y, eps=0.1, steps=10, measures=["grad", "taylor_gap"])
    assert df["correct_clean"].mean() > 0.85
    assert df["correct_adv"].mean() < df["correct_clean"].mean() - 0.2
    assert (df["loss_adv"] > df["loss_clean"]).mean() > 0.95
    assert (df["grad_l1"] >= df["grad_l2"]).all() and (df["grad_l2"] >= df["grad_linf"]).all()


def test_batch_size_does_not_change_deterministic_columns(tiny_model):
    x, y = torch.rand(10, 1, 8, 8, dtype=torch.float64), torch.arange(10)
    kw = dict(eps=0.1, attack="fgsm", measures=["grad", "curv_adv", "taylor_gap", "logit_var"],
              dtype=torch.float64)
    a = measure(tiny_model, x, y, batch_size=3, **kw)
    b = measure(tiny_model, x, y, batch_size=64, **kw)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-10)


def test_seeded_and_reproducible(tiny_model):
    x, y = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    kw = dict(eps=0.1, steps=3, eig_iters=3, batch_size=4)
    a, b = measure(tiny_model, x, y, seed=1, **kw), measure(tiny_model, x, y, seed=1, **kw)
    c = measure(tiny_model, x, y, seed=2, **kw)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["curv_rand"], c["curv_rand"])
    # another random start: PGD often ends in the same corner of the ball, so the losses differ only slightly
    assert not np.array_equal(a["loss_adv"], c["loss_adv"])


def test_eps_zero_gives_clean_values(tiny_model):
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    df = measure(tiny_model, x, y, eps=0.0, measures=["curv_adv", "taylor_gap", "logit_var"])
    np.testing.assert_array_equal(df["loss_adv"], df["loss_clean"])
    assert (df["curv_adv"] == 0).all() and (df["taylor_gap"] == 0).all() and (df["logit_var"] == 0).all()


def test_does_not_touch_the_callers_model():
    torch.manual_seed(0)
    model = create_model("small_cnn", width=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    df = measure(model, torch.rand(3, 1, 8, 8), torch.arange(3), eps=0.1, steps=2, eig_iters=2,
                 dtype=torch.float64)
    assert df.attrs["dtype"] == "float64"
    assert all(m.training for m in model.modules())
    assert all(p.dtype == torch.float32 and p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    measure(model, torch.rand(3, 1, 8, 8), torch.arange(3), eps=0.1, steps=2, eig_iters=2)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


class LogFeatures(nn.Module):
    """logits = log of the first 10 pixels: a zero pixel gives an infinite logit."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * torch.log(x.flatten(1)[:, :10])


def test_nonfinite_values_are_counted_and_warned():
    x = torch.full((3, 1, 8, 8), 0.5)
    x[1, 0, 0, 0] = 0.0
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        df = measure(LogFeatures(), x, torch.tensor([0, 1, 2]), eps=0.0, measures=["grad", "logit_var"])
    assert df.attrs["nonfinite"] > 0
    assert df.attrs["nonfinite"] == int((~np.isfinite(df.select_dtypes("floating").to_numpy())).sum())
    assert np.isfinite(df.iloc[[0, 2]].select_dtypes("floating").to_numpy()).all()


def test_validation(tiny_model):
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="allowed: grad, curv_adv, curv_rand, eig_top, taylor_gap, logit_var"):
        measure(tiny_model, x, y, eps=0.1, measures=["grad", "hessian_trace"])
    with pytest.raises(ValueError, match="attack"):
        measure(tiny_model, x, y, eps=0.1, attack="cw")
    with pytest.raises(ValueError, match="norm"):
        measure(tiny_model, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="batch_size"):
        measure(tiny_model, x, y, eps=0.1, batch_size=0)
    with pytest.raises(ValueError, match="eps"):
        measure(tiny_model, x, y, eps=-1.0)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        measure(tiny_model, x * 3, y, eps=0.1)
    with pytest.raises(TypeError, match="dtype"):
        measure(tiny_model, x, y, eps=0.1, dtype=torch.int64)


def test_progress_bar_shows_only_when_asked(tiny_model, capsys, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_PROGRESS", "1")  # captured stderr is no terminal: bars are off unless forced
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    measure(tiny_model, x, y, eps=0.1, measures=["grad"], batch_size=2)
    assert "measure" not in capsys.readouterr().err
    measure(tiny_model, x, y, eps=0.1, measures=["grad"], batch_size=2, progress=True)
    assert "measure" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def checkpoint(tmp_path, digits):
    from landscape.checkpoints import save_checkpoint

    model, _, _ = digits
    path = tmp_path / "epoch_3.pth"
    save_checkpoint(path, model, epoch=3)
    return path


@pytest.mark.parametrize("ext", ["parquet", "csv"])
def test_cli_writes_table_and_prints_means(checkpoint, tmp_path, capsys, digits, ext):
    from landscape.cli import main

    out = tmp_path / f"m.{ext}"
    rc = main(["measure", str(checkpoint), "--arch", "mlp", "--arch-arg", "hidden=(32,)", "--arch-arg",
               "activation='softplus'", "--data", "digits", "--n", "60", "--out", str(out), "--quiet",
               "--measures", "grad,logit_var", "--attack", "fgsm", "--eps", "0.05"])
    assert rc == 0
    df = pd.read_parquet(out) if ext == "parquet" else pd.read_csv(out)
    assert list(df.columns) == ALL_COLUMNS[:9] + ["logit_var", "eps"] and len(df) == 60
    model, x, y = digits
    direct = measure(model, x, y, eps=0.05, attack="fgsm", measures=["grad", "logit_var"])
    np.testing.assert_allclose(df["grad_l1"], direct["grad_l1"], rtol=1e-6)
    printed = capsys.readouterr().out
    assert f"acc_clean    {direct['correct_clean'].mean():.6g}" in printed
    assert f"grad_l1      {direct['grad_l1'].mean():.6g}" in printed
    if ext == "parquet":
        assert df.attrs["eps"] == 0.05 and df.attrs["attack"] == "fgsm"


def test_cli_errors_are_one_line(checkpoint, tmp_path, capsys):
    from landscape.cli import main

    base = ["measure", str(checkpoint), "--arch", "mlp", "--arch-arg", "hidden=(32,)", "--n", "10"]
    assert main(base + ["--out", str(tmp_path / "m.txt")]) == 2
    assert "--out must end in .parquet or .csv" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "m.csv"), "--measures", "grad,foo"]) == 2
    err = capsys.readouterr().err
    assert "unknown measure(s) 'foo'" in err and len(err.strip().splitlines()) == 1
    assert main(base + ["--out", str(tmp_path / "missing" / "m.csv")]) == 2
    assert not (tmp_path / "m.csv").exists()


# ------------------------------------------------------------------ registry, adversarial point, first-order share

def _model64(model):
    m = create_model("mlp", hidden=(32,), activation="softplus").double()
    m.load_state_dict(model.state_dict())
    return m.eval()


def test_adversarial_point_measures_equal_direct_evaluation_at_x_adv(digits):
    from landscape.measures.curvature import directional_curvature as dc

    model, x, y = digits
    m64, x64 = _model64(model), x[:12].double()
    y = y[:12]
    eps = 0.05
    names = ["grad_at_adv", "curv_adv_at_adv", "eig_top_at_adv"]
    df = measure(model, x64, y, eps=eps, attack="fgsm", measures=names, eig_iters=200, dtype=torch.float64)
    assert list(df.columns)[6:] == ["grad_l1_at_adv", "grad_l2_at_adv", "grad_linf_at_adv", "curv_adv_at_adv",
                                    "eig_top_at_adv"]
    x_adv, delta = fgsm(m64, x64, y, eps)
    for col, values in {**{f"{k}_at_adv": v for k, v in gradient_norms(m64, x_adv, y).items()},
                        "curv_adv_at_adv": dc(m64, x_adv, y, delta)}.items():
        np.testing.assert_allclose(df[col], values.numpy(), rtol=1e-9, atol=1e-12, err_msg=col)
    clean = gradient_norms(m64, x64, y)["grad_l1"].numpy()
    assert not np.allclose(df["grad_l1_at_adv"], clean)  # a different point, not the clean one again
    for i in range(3):  # eig_top at x_adv against the dense autograd Hessian there
        hess = torch.autograd.functional.hessian(
            lambda z: F.cross_entropy(m64(z.reshape(1, 1, 8, 8)), y[i:i + 1]), x_adv[i].flatten())
        eig = torch.linalg.eigvalsh(hess)
        assert df["eig_top_at_adv"][i] == pytest.approx(float(eig[eig.abs().argmax()]), rel=1e-3)


def test_at_adv_with_eps_zero_is_the_clean_measure(tiny_model):
    x, y = torch.rand(5, 1, 8, 8, dtype=torch.float64), torch.arange(5)
    df = measure(tiny_model, x, y, eps=0.0, measures=["curv_rand", "curv_rand_at_adv", "grad", "grad_at_adv"],
                 dtype=torch.float64)
    np.testing.assert_array_equal(df["curv_rand_at_adv"], df["curv_rand"])  # same point, same seeded direction
    np.testing.assert_array_equal(df["grad_l1_at_adv"], df["grad_l1"])


def _per_sample_grad(model, x, y):
    """Input gradient one sample at a time (independent of the batched implementation)."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xi), y[i:i + 1]), xi)
        out.append(g[0])
    return torch.stack(out)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_first_order_share_matches_its_definition(digits, norm):
    from landscape.measures import first_order_share

    model, x, y = digits
    m64, x64 = _model64(model), x[:16].double()
    y = y[:16]
    eps = 0.05 if norm == "linf" else 0.5
    df = measure(model, x64, y, eps=eps, attack="fgsm", norm=norm, measures=["fo_share"], dtype=torch.float64)
    g = _per_sample_grad(m64, x64, y).flatten(1)
    dual = g.abs().sum(1) if norm == "linf" else g.norm(dim=1)
    x_adv, _ = fgsm(m64, x64, y, eps, norm=norm)
    with torch.no_grad():
        inc = F.cross_entropy(m64(x_adv), y, reduction="none") - F.cross_entropy(m64(x64), y, reduction="none")
    expect = torch.where(inc >= 1e-4, eps * dual / inc, torch.full_like(inc, float("nan")))
    np.testing.assert_allclose(df["fo_share"], expect.numpy(), rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(first_order_share(m64, x64, y, x_adv, eps=eps, norm=norm).numpy(), expect.numpy(),
                               rtol=1e-9, equal_nan=True)
    assert np.isfinite(df["fo_share"]).mean() > 0.5


def test_first_order_share_tends_to_one_for_a_small_step(tiny_model):
    """Taylor: L(x + eps·sign g) − L(x) = eps‖g‖₁ + O(eps²), so the share -> 1 as eps -> 0 (inside the box)."""
    from landscape.measures import first_order_share

    m64 = tiny_model.double()
    x = 0.1 + 0.8 * torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(6)
    shares = []
    for eps in (1e-2, 1e-3):
        x_adv, _ = fgsm(m64, x, y, eps)
        shares.append(first_order_share(m64, x, y, x_adv, eps=eps, min_increase=1e-12))
    assert (shares[1] - 1).abs().max() < 0.2 * (shares[0] - 1).abs().max() + 1e-9
    assert (shares[1] - 1).abs().max() < 0.05


def test_first_order_share_undefined_for_no_increase(tiny_model):
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # documented NaN is not a numerical failure: no warning
        df = measure(tiny_model, x, y, eps=0.0, measures=["fo_share"])
    assert df["fo_share"].isna().all() and df.attrs["undefined"] == 4 and df.attrs["nonfinite"] == 0


def test_attack_settings_instead_of_loose_arguments(tiny_model):
    from landscape.attacks import AttackSettings

    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    s = AttackSettings("pgd", 0.1, 3, None, "linf", False)
    a = measure(tiny_model, x, y, settings=s, measures=["grad", "curv_adv"])
    b = measure(tiny_model, x, y, eps=0.1, steps=3, random_start=False, measures=["grad", "curv_adv"])
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["random_start"] is False and a.attrs["step_size"] == pytest.approx(2.5 * 0.1 / 3)
    official = measure(tiny_model, x, y, settings=AttackSettings.official(0.1), measures=["grad"])
    assert official.attrs["step_size"] == pytest.approx(0.025) and official.attrs["steps"] == 10
    with pytest.raises(ValueError, match="not both"):
        measure(tiny_model, x, y, settings=s, eps=0.2)
    with pytest.raises(TypeError, match="eps"):
        measure(tiny_model, x, y)
    with pytest.raises(ValueError, match="8/255 = 0.0314"):
        measure(tiny_model, x, y, eps=8)


def test_registry_columns_labels_and_units():
    from landscape.measures import registry

    cols = [c for s in registry.SPECS for c in s.columns]
    assert len(cols) == len(set(cols))
    assert columns(registry.MEASURES) == list(columns(None)[:6]) + cols
    labels, units = registry.column_labels(), registry.column_units()
    assert set(labels) == set(units) == set(cols)
    from landscape.plotting._tables import MEASURE_LABELS, MEASURE_UNITS

    assert all(MEASURE_LABELS[c] == labels[c] and MEASURE_UNITS[c] == units[c] for c in cols)
    with pytest.raises(ValueError, match="unknown measure 'x'"):
        registry.get("x")


def test_a_new_measure_is_one_spec_and_one_registry_line(tiny_model, monkeypatch):
    """A per-batch measure (one value per batch) is repeated on each row of its batch."""
    from landscape.measures import registry
    from landscape.measures.spec import MeasureSpec

    spec = MeasureSpec("batch_loss", ("batch_loss",), lambda ctx: {"batch_loss": ctx.loss.mean()},
                       "mean clean loss of the batch", "nats", per_batch=True)
    monkeypatch.setattr(registry, "SPECS", (*registry.SPECS, spec))
    x, y = torch.rand(7, 1, 8, 8), torch.arange(7)
    df = measure(tiny_model, x, y, eps=0.1, measures=["batch_loss"], batch_size=3)
    assert list(df.columns)[-1] == "batch_loss"
    for start in (0, 3, 6):
        rows = df.iloc[start:start + 3]
        np.testing.assert_allclose(rows["batch_loss"], rows["loss_clean"].mean(), rtol=1e-6)


def test_measure_settings_whole_equal_loose(tiny_model):
    from landscape.measures.settings import MeasureSettings

    x, y = torch.rand(10, 1, 8, 8), torch.arange(10)
    opts = MeasureSettings(measures=("grad", "curv_adv"), batch_size=4, seed=3, eig_iters=5, dtype="float64")
    whole = measure(tiny_model, x, y, eps=0.1, options=opts)
    loose = measure(tiny_model, x, y, eps=0.1, measures=["grad", "curv_adv"], batch_size=4, seed=3, eig_iters=5,
                    dtype=torch.float64)
    pd.testing.assert_frame_equal(whole, loose, check_exact=True)
    assert whole.attrs == loose.attrs and whole.attrs["dtype"] == "float64"
    with pytest.raises(ValueError, match="batch_size"):
        measure(tiny_model, x, y, eps=0.1, options=opts, batch_size=8)
    with pytest.raises(ValueError, match="unknown measure"):
        MeasureSettings(measures=("gradd",))
    assert MeasureSettings(measures="curv_adv,grad").measures == ("grad", "curv_adv")  # registry order


def test_a_streamed_dataset_leaves_the_global_rng_as_tensors_do(tiny_model):
    """Streaming through a DataLoader draws no random number from the caller's RNG (the loader has its own)."""
    from landscape.datasets import open_dataset, select

    ds = select(open_dataset("digits", "test"), 20, 0)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    measure(tiny_model, ds, eps=0.1, measures=["grad"], batch_size=8)
    assert torch.equal(torch.get_rng_state(), before)
