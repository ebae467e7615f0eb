"""Adding a measure is one new file plus one registry line (the worked example of docs/measures.md, run as
written), and the table acts on what a MeasureSpec declares, never on its name."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from landscape import create_model, measure
from landscape.attacks import fgsm
from landscape.measures import _autograd, registry
from landscape.measures.spec import MeasureSpec, at_adv
from landscape.measures.table import columns

DOCS = Path(__file__).resolve().parents[1] / "docs" / "measures.md"


def _doc_block(first_line: str) -> str:
    """The ```python block of docs/measures.md whose first line is ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    found = [b for b in blocks if b.splitlines()[0] == first_line]
    assert len(found) == 1, f"docs/measures.md: expected one block starting {first_line!r}"
    return found[0]


@pytest.fixture
def margin_module(tmp_path, monkeypatch):
    """The docs' example module, written to a temporary file and imported as ``landscape.measures.margin``
    (so its relative imports resolve as they would in the package)."""
    path = tmp_path / "margin.py"
    path.write_text(_doc_block("# landscape/measures/margin.py"))
    spec = importlib.util.spec_from_file_location("landscape.measures.margin", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "landscape.measures.margin", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registered(margin_module, monkeypatch):
    """The docs' one registry line added to SPECS, and its ``at_adv`` variant (a second, optional line)."""
    lines = [ln.strip().rstrip(",") for ln in _doc_block("# landscape/measures/registry.py").splitlines()
             if "margin." in ln]
    assert lines == ["margin.MARGIN"], "the example registers with one line"
    spec = eval(lines[0], {"margin": margin_module})  # noqa: S307 -- the docs' own registry line
    monkeypatch.setattr(registry, "SPECS", (*registry.SPECS, spec, at_adv(spec)))
    return spec


def _margin(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """z_y − max_{k≠y} z_k computed directly, one sample at a time."""
    out = []
    for z, label in zip(logits, y):
        others = torch.cat([z[:label], z[label + 1:]])
        out.append(float(z[label] - others.max()))
    return np.array(out)


def _model64() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_model("mlp", hidden=(16,), activation="softplus").double().eval()


def test_the_docs_example_measure_gives_the_logit_margin(registered):
    assert registered.name == "margin" and not registered.hessian and registered.point == "clean"
    assert columns(["grad", "margin"])[-4:] == ["grad_l1", "grad_l2", "grad_linf", "margin"]
    assert columns("margin,margin_at_adv")[-2:] == ["margin", "margin_at_adv"]
    assert registry.column_labels()["margin"].startswith("logit margin")
    assert registry.column_units()["margin_at_adv"] == "logit units"
    model = _model64()
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(7, 1, 8, 8, generator=g, dtype=torch.float64), torch.arange(7) % 10
    df = measure(model, x, y, eps=0.1, attack="fgsm", measures=["margin", "margin_at_adv"], batch_size=3)
    assert list(df.columns)[-2:] == ["margin", "margin_at_adv"]
    with torch.no_grad():
        clean = _margin(model(x), y)
        adv = _margin(model(fgsm(model, x, y, 0.1)[0]), y)
    np.testing.assert_allclose(df["margin"], clean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(df["margin_at_adv"], adv, rtol=1e-12, atol=1e-12)
    assert ((df["margin"] > 0) == df["correct_clean"]).all() and ((df["margin_at_adv"] > 0) == df["correct_adv"]).all()
    assert df.attrs["hvp_method"] is None and df.attrs["eig_unconverged"] is None  # it declares neither


def test_the_cli_accepts_the_docs_example_measure(registered, tmp_path, capsys):
    from landscape.checkpoints import save_checkpoint
    from landscape.cli import main
    from landscape.datasets import load_dataset

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("mlp", hidden=(16,), activation="softplus").eval()
    ckpt, out = tmp_path / "epoch_1.pth", tmp_path / "m.csv"
    save_checkpoint(ckpt, model, epoch=1)
    rc = main(["measure", str(ckpt), "--arch", "mlp", "--arch-arg", "hidden=(16,)", "--arch-arg",
               "activation='softplus'", "--data", "digits", "--n", "20", "--out", str(out), "--quiet",
               "--measures", "grad,margin", "--attack", "fgsm", "--eps", "0.05"])
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(out)
    assert list(df.columns)[-2:] == ["margin", "eps"]
    x, y = load_dataset("digits", "test", n=20)
    with torch.no_grad():
        np.testing.assert_allclose(df["margin"], _margin(model(x), y), rtol=1e-5, atol=1e-5)


def test_an_unregistered_name_is_still_refused(margin_module):
    with pytest.raises(ValueError, match="unknown measure"):
        columns(["margin"])


# ------------------------------------------------------------------ the table reads declarations, not names


def _register(monkeypatch, *specs: MeasureSpec) -> None:
    monkeypatch.setattr(registry, "SPECS", (*registry.SPECS, *specs))


def test_a_curvature_like_name_without_declared_needs_uses_no_hessian(tiny_model, monkeypatch):
    built = []
    real = _autograd.gradient_graph
    monkeypatch.setattr(_autograd, "gradient_graph", lambda *a: built.append(1) or real(*a))
    _register(monkeypatch, MeasureSpec("curv_like", ("curv_like",), lambda ctx: {"curv_like": ctx.loss},
                                       "clean loss", "nats"),
              MeasureSpec("eig_like", ("eig_like",), lambda ctx: {"eig_like": ctx.loss}, "clean loss", "nats"))
    df = measure(tiny_model, torch.rand(5, 1, 8, 8), torch.arange(5), eps=0.1, measures=["curv_like", "eig_like"])
    assert built == [] and df.attrs["hvp_method"] is None and df.attrs["eig_unconverged"] is None
    np.testing.assert_array_equal(df["curv_like"], df["loss_clean"])


def test_a_declared_hessian_measure_shares_the_clean_operator(tiny_model, monkeypatch):
    """Any name: ``hessian=True`` at the clean point makes the table build the shared operator and take the
    clean loss/logits/gradient from its kept first backward (no separate plain gradient)."""
    from landscape.measures import curvature, table

    plain, built = [], []
    real_plain, real_graph = table.loss_logits_grad, _autograd.gradient_graph
    monkeypatch.setattr(table, "loss_logits_grad", lambda *a: plain.append(1) or real_plain(*a))
    monkeypatch.setattr(_autograd, "gradient_graph", lambda *a: built.append(1) or real_graph(*a))

    def bend(ctx):
        op = _autograd.shared_operator(ctx.model, ctx.x, ctx.y, ctx.state, ctx.point)
        return {"bend": curvature._curvature_along(op, ctx.delta)}

    _register(monkeypatch, MeasureSpec("bend", ("bend",), bend, "curvature along δ", "nats", hessian=True))
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    df = measure(tiny_model, x, y, eps=0.1, measures=["bend", "curv_adv"], batch_size=3)
    assert plain == [] and built == [1, 1]  # one kept graph per batch, shared with curv_adv
    assert df.attrs["hvp_method"] == "double_backprop"
    np.testing.assert_array_equal(df["bend"], df["curv_adv"])


def test_point_and_counters_are_read_from_the_spec(tiny_model, monkeypatch):
    def adv_only(ctx):
        assert ctx.point == "adv" and torch.equal(ctx.x, ctx.x_adv)
        ctx.state["visits"] += 1
        return {"loss_here": ctx.loss}

    spec = MeasureSpec("loss_here", ("loss_here",), adv_only, "loss at x_adv", "nats", point="adv",
                       counters=("visits",))
    _register(monkeypatch, spec)
    x, y = torch.rand(7, 1, 8, 8), torch.arange(7)
    df = measure(tiny_model, x, y, eps=0.1, measures=["loss_here"], batch_size=3)
    np.testing.assert_array_equal(df["loss_here"], df["loss_adv"])
    assert df.attrs["visits"] == 3  # three batches
    assert measure(tiny_model, x, y, eps=0.1, measures=["grad"]).attrs["visits"] is None


def test_spec_declarations_are_validated():
    with pytest.raises(ValueError, match="point"):
        MeasureSpec("m", ("m",), lambda ctx: {}, "l", "u", point="x_adv")
    with pytest.raises(TypeError, match="counters"):
        MeasureSpec("m", ("m",), lambda ctx: {}, "l", "u", counters="visits")
    derived = at_adv(MeasureSpec("m", ("m",), lambda ctx: {}, "l", "u", hessian=True, counters=("c",)))
    assert (derived.point, derived.hessian, derived.counters) == ("adv", True, ("c",))


def test_registered_needs_match_the_measures_that_use_hessian_products():
    """The declarations of the shipped measures (what the old name prefixes and lists encoded)."""
    hessian = {s.name for s in registry.SPECS if s.hessian}
    assert hessian == {"curv_adv", "curv_rand", "eig_top", "hs", "curv_adv_at_adv", "curv_rand_at_adv",
                       "eig_top_at_adv", "hs_at_adv"}
    assert {s.name for s in registry.SPECS if s.hessian and s.point == "clean"} == {"curv_adv", "curv_rand",
                                                                                   "eig_top", "hs"}
    assert {s.name for s in registry.SPECS if s.counters} == {"eig_top", "eig_top_at_adv"}
    assert registry.counters() == ("eig_unconverged",)
    assert {s.name for s in registry.SPECS if s.per_batch} == {"hs", "hs_at_adv"}
