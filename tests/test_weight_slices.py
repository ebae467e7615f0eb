"""Weight-space slices and the PCA training path (landscape.weight_slices), their figures and `slice --space
weights`: slice values equal direct evaluation of copies with hand-perturbed weights, directions are
filter-normalised, the PCA agrees with numpy's SVD, the model comes back bit for bit (also after an error)."""
from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape._base import LandscapeError
from landscape.attacks import AttackSettings, run_attack
from landscape.weight_slices import (eigen_directions, normalize_direction, path_surface, random_direction,
                                     to_h5, to_parquet, to_vtp, training_path, weight_slice_1d, weight_slice_2d)

ATTACK = AttackSettings("pgd", 0.1, 3, random_start=False)


def _net() -> nn.Module:
    """Conv + BN + linear, float64, BN running statistics set by one train-mode batch; eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Softplus(), nn.Flatten(),
                            nn.Linear(3 * 6 * 6, 4)).double()
        net.train()
        net(torch.rand(16, 1, 8, 8, dtype=torch.float64))
    return net.eval()


@pytest.fixture
def net():
    return _net()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 1, 8, 8, generator=g, dtype=torch.float64), torch.arange(12) % 4


def _state(model):
    return [t.detach().clone() for t in (*model.parameters(), *model.buffers())]


def _same(model, state) -> bool:
    return all(torch.equal(a, b) for a, b in zip((*model.parameters(), *model.buffers()), state))


def _direct(model, x, y, moves):
    """(mean loss, accuracy) of a copy with each parameter set to w + c·d (one term per (c, d) in order)."""
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            w = p.detach().clone()
            for c, d in moves:
                w = w + d[n] * c
            p.copy_(w)
        logits = m(x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean())


# ---------------------------------------------------------------------------------------------- directions


def test_random_direction_is_filter_normalised_with_bias_and_bn_zero(net):
    d = random_direction(net, seed=3)
    for name, p in net.named_parameters():
        if p.dim() > 1:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), p.flatten(1).norm(dim=1), rtol=1e-12, atol=0)
        else:
            assert torch.count_nonzero(d[name]) == 0, name  # conv/linear biases and BN weight/bias
    again = random_direction(net, seed=3)
    assert all(torch.equal(d[n], again[n]) for n in d)
    assert not torch.equal(d["0.weight"], random_direction(net, seed=4)["0.weight"])
    full = random_direction(net, seed=3, ignore=None)  # biases and BN included: d = w (reference code)
    assert torch.equal(full["1.weight"], net[1].weight.detach()) and torch.equal(full["4.bias"], net[4].bias.detach())
    unit = random_direction(net, seed=3, norm="unit")
    assert abs(sum(float(v.pow(2).sum()) for v in unit.values()) - 1) < 1e-12


def test_normalize_direction_checks_names_and_shapes(net):
    with pytest.raises(ValueError, match="unknown norm 'filtr'; did you mean 'filter'"):
        normalize_direction({}, net, norm="filtr")
    with pytest.raises(ValueError, match="has shape"):
        normalize_direction({"0.weight": torch.zeros(2)}, net)


def test_eigen_direction_is_the_top_eigenvector_of_the_dense_weight_hessian(net, batch):
    x, y = batch
    names = [n for n, p in net.named_parameters() if p.dim() > 1]
    params = dict(net.named_parameters())
    flat0 = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss(flat):
        values, i = {}, 0
        for n in names:
            values[n] = flat[i:i + params[n].numel()].view_as(params[n])
            i += params[n].numel()
        return F.cross_entropy(torch.func.functional_call(net, values, (x,)), y)

    H = torch.autograd.functional.hessian(loss, flat0)
    dense = torch.linalg.eigvalsh(H)
    vals, dirs = eigen_directions(net, x, y, k=2, iters=80, tol=1e-10)
    np.testing.assert_allclose(vals, dense.flip(0)[:2].numpy(), rtol=1e-6)
    v = torch.cat([dirs[0][n].reshape(-1) for n in names])
    assert abs(float(v.norm()) - 1) < 1e-12
    np.testing.assert_allclose(float(v @ H @ v), dense[-1].item(), rtol=1e-6)
    assert all(torch.count_nonzero(dirs[0][n]) == 0 for n, p in net.named_parameters() if p.dim() <= 1)


# ---------------------------------------------------------------------------------------------- slices


def test_1d_slice_equals_direct_evaluation_clean_and_robust(net, batch):
    x, y = batch
    d = random_direction(net, seed=0)
    x_adv = run_attack(net, x, y, ATTACK)[0]
    alphas = [-0.5, 0.0, 0.25, 1.0]
    df = weight_slice_1d(net, x, y, d, alphas, loss="both", x_adv=x_adv, batch_size=5)
    assert list(df.columns) == ["direction", "alpha", "kind", "loss", "acc"]
    assert df["kind"].tolist() == ["clean", "robust"] * 4 and df["alpha"].tolist() == np.repeat(alphas, 2).tolist()
    for a in alphas:
        for kind, xs in (("clean", x), ("robust", x_adv)):
            row = df[(df["alpha"] == a) & (df["kind"] == kind)].iloc[0]
            loss, acc = _direct(net, xs, y, [(a, d)])
            assert row["loss"] == pytest.approx(loss, rel=1e-12) and row["acc"] == pytest.approx(acc)
    # the robust loss attacked here at the centre equals the one given x_adv (deterministic attack)
    own = weight_slice_1d(net, x, y, d, alphas, loss="robust", attack=ATTACK)
    np.testing.assert_allclose(own["loss"], df[df["kind"] == "robust"]["loss"], rtol=1e-12)


def test_reattack_attacks_at_each_weight_point(net, batch):
    x, y = batch
    d = random_direction(net, seed=0)
    df = weight_slice_1d(net, x, y, d, [0.0, 0.8], loss="robust", attack=ATTACK, reattack=True)
    fixed = weight_slice_1d(net, x, y, d, [0.0, 0.8], loss="robust", attack=ATTACK)
    assert df["loss"].iloc[0] == pytest.approx(fixed["loss"].iloc[0], rel=1e-12)  # same weights, same attack
    moved = copy.deepcopy(net)
    with torch.no_grad():
        for n, p in moved.named_parameters():
            p.copy_(p + d[n] * 0.8)
    x_moved = run_attack(moved, x, y, ATTACK)[0]
    with torch.no_grad():
        assert df["loss"].iloc[1] == pytest.approx(float(F.cross_entropy(moved(x_moved), y)), rel=1e-12)


def test_2d_slice_centre_is_the_unperturbed_loss_and_corners_are_direct(net, batch):
    x, y = batch
    df = weight_slice_2d(net, x, y, "random", "random", [-1.0, 0.0, 1.0], [-0.5, 0.0, 0.5], seed=2)
    assert list(df.columns) == ["direction1", "direction2", "alpha", "beta", "kind", "loss", "acc"]
    centre = df[(df["alpha"] == 0) & (df["beta"] == 0)]["loss"].item()
    assert centre == pytest.approx(float(F.cross_entropy(net(x), y).detach()), rel=1e-12)
    d1, d2 = random_direction(net, seed=2), random_direction(net, seed=3)  # d2 uses seed + 1
    corner = df[(df["alpha"] == 1.0) & (df["beta"] == -0.5)].iloc[0]
    assert corner["loss"] == pytest.approx(_direct(net, x, y, [(1.0, d1), (-0.5, d2)])[0], rel=1e-12)


def test_model_comes_back_bit_identical_in_its_mode_without_grad_or_rng_use(net, batch):
    x, y = batch
    net.train()  # BN would update its running stats in train mode: the slice must evaluate in eval mode
    net[1].eval()
    before, rng = _state(net), torch.get_rng_state()
    weight_slice_2d(net, x, y, "random", "eigen", [-1.0, 1.0], [0.0, 2.0], loss="both", attack=ATTACK)
    assert _same(net, before)
    assert net.training and not net[1].training and net[0].training
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


class _Flaky(nn.Module):
    """Wraps a net; raises on the ``fail_at``-th forward pass (an error midway through a slice)."""

    def __init__(self, net, fail_at):
        super().__init__()
        self.net, self.calls, self.fail_at = net, 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("injected")
        return self.net(x)


def test_weights_and_buffers_come_back_after_an_error_midway(net, batch):
    x, y = batch
    model = _Flaky(net, fail_at=3)
    before = _state(model)
    with pytest.raises(RuntimeError, match="injected"):
        weight_slice_1d(model, x, y, random_direction(model, seed=0), [-1.0, 0.5, 1.0, 2.0])
    assert _same(model, before)
    assert model.training  # nn.Module default mode, restored


@pytest.mark.parametrize("kw, error, message", [
    ({"direction": "sideways"}, ValueError, "unknown direction 'sideways'"),
    ({"loss": "robust"}, TypeError, "needs attack="),
    ({"loss": "worst"}, ValueError, "unknown loss 'worst'"),
    ({"alphas": []}, ValueError, "alphas must be a non-empty"),
    ({"direction": {"nope": torch.zeros(1)}}, ValueError, "does not have"),
])
def test_bad_arguments_fail_at_the_boundary(net, batch, kw, error, message):
    x, y = batch
    args = {"direction": "random", "alphas": [0.0], **kw}
    with pytest.raises(error, match=message):
        weight_slice_1d(net, x, y, args.pop("direction"), args.pop("alphas"), **args)


# ---------------------------------------------------------------------------------------------- training path


def _with_weights(model, flat: np.ndarray, names):
    m = copy.deepcopy(model)
    params, i = dict(m.named_parameters()), 0
    with torch.no_grad():
        for n in names:
            params[n].copy_(torch.from_numpy(flat[i:i + params[n].numel()]).view_as(params[n]))
            i += params[n].numel()
    return m


def _path(net, seed=0, planar=False, epochs=6):
    names = [n for n, p in net.named_parameters() if p.dim() > 1]
    w0 = torch.cat([dict(net.named_parameters())[n].detach().reshape(-1) for n in names]).numpy()
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(2, w0.size))
    W = [w0 + (np.cos(t) * u + t * v if planar else rng.normal(size=w0.size) * (epochs - t)) for t in range(epochs)]
    return names, np.stack(W), [_with_weights(net, w, names) for w in W]


def test_pca_coordinates_and_variance_match_numpy_svd(net):
    names, W, models = _path(net)
    path = training_path(models[::-1], epochs=list(range(len(models)))[::-1])  # ordered by the epochs given
    D = W[:-1] - W[-1]
    Dc = D - D.mean(axis=0)
    _, s, Vt = np.linalg.svd(Dc, full_matrices=False)
    ref = (W - W[-1]) @ Vt[:2].T
    coords = path.coords[["pc1", "pc2"]].to_numpy()
    signs = np.sign(ref[0]) * np.sign(coords[0])
    np.testing.assert_allclose(coords, ref * signs, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(path.variance["ratio"], s ** 2 / (s ** 2).sum(), rtol=1e-9)
    assert path.coords["epoch"].tolist() == list(range(len(models)))
    assert (coords[-1] == 0).all() and (coords[0] <= 0).all()
    comp = np.stack([torch.cat([path.directions[c][n].reshape(-1) for n in names]).numpy() for c in range(2)])
    np.testing.assert_allclose(comp @ comp.T, np.eye(2), atol=1e-12)
    assert all(torch.count_nonzero(path.directions[0][n]) == 0 for n, p in net.named_parameters() if p.dim() <= 1)


def test_a_planar_path_is_reconstructed_exactly_from_its_coordinates(net):
    names, W, models = _path(net, planar=True)
    path = training_path(models)
    comp = np.stack([torch.cat([path.directions[c][n].reshape(-1) for n in names]).numpy() for c in range(2)])
    back = W[-1] + path.coords[["pc1", "pc2"]].to_numpy() @ comp
    np.testing.assert_allclose(back, W, atol=1e-9)
    assert path.coords["residual"].max() < 1e-9 and path.variance["cumulative"].iloc[1] == pytest.approx(1.0)


def test_training_path_reads_a_run_folder_and_its_surface_restores_the_model(net, batch, tmp_path):
    from landscape import create_model
    from landscape.checkpoints import save_checkpoint

    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = create_model("mlp", input_shape=(1, 8, 8), hidden=(6,))  # float32, as load_model builds it
    _, _, models = _path(base, epochs=4)
    for e, m in enumerate(models, start=1):
        save_checkpoint(tmp_path / f"model_e{e:03d}.pt", m, epoch=e)
    (tmp_path / "optimizer_4.pt").write_bytes(b"not read")
    path = training_path(tmp_path)
    assert path.coords["epoch"].tolist() == [1, 2, 3, 4]
    assert path.coords["checkpoint"].iloc[-1].endswith("model_e004.pt")
    assert all(torch.equal(path.centre[k], v) for k, v in models[-1].state_dict().items())
    x, y = batch[0].float(), batch[1]
    other = copy.deepcopy(base)  # another state: the surface is evaluated at the path's final weights
    before = _state(other)
    surf = path_surface(other, x, y, path, alphas=[0.0, 1.0], betas=[0.0])
    assert _same(other, before)
    with torch.no_grad():
        want = float(F.cross_entropy(models[-1](x), y, reduction="none").double().mean())
    assert surf.loc[surf["alpha"] == 0, "loss"].item() == pytest.approx(want, rel=1e-12)
    assert (surf["direction1"] == "pc1").all() and len(surf.attrs["ratio"]) == 2
    # the path rides along (one file draws the figure): its rows equal path.coords, after the grid's
    grid, rows = surf[surf["kind"] != "path"], surf[surf["kind"] == "path"]
    assert len(grid) == 2 and grid.index.max() < rows.index.min() and grid["epoch"].isna().all()
    assert rows["epoch"].tolist() == [1, 2, 3, 4] and rows[["alpha", "beta", "loss"]].isna().all().all()
    np.testing.assert_array_equal(rows[["pc1", "pc2"]].to_numpy(), path.coords[["pc1", "pc2"]].to_numpy())
    assert rows["pc1_ratio"].iloc[0] == path.coords.attrs["ratio"][0]
    with pytest.raises(ValueError, match="at least 3 checkpoints"):
        training_path(models[:2])


# ---------------------------------------------------------------------------------------------- exports


@pytest.fixture
def surface(net, batch):
    x, y = batch
    return weight_slice_2d(net, x, y, "random", "random", [-1.0, 0.0, 1.0], [-1.0, 0.5], loss="both",
                           x_adv=x.flip(0))


def test_parquet_round_trips_values_and_attrs(surface, tmp_path):
    back = pd.read_parquet(to_parquet(surface, tmp_path / "s.parquet"))
    pd.testing.assert_frame_equal(back, surface)
    assert back.attrs["norm"] == "filter" and back.attrs["n"] == 12


def test_h5_round_trips_or_names_the_missing_package(surface, tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    to_h5({"surface": surface, "other": surface.head(2)}, tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        np.testing.assert_array_equal(f["surface/loss"][()], surface["loss"].to_numpy())
        assert [s.decode() for s in f["surface/kind"][()]] == surface["kind"].tolist()
        assert json.loads(f["surface"].attrs["attrs"])["seed"] == 0 and len(f["other/alpha"]) == 2
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)
    with pytest.raises(LandscapeError, match=r"needs the h5py package \(pip install 'landscape\[vtk\]'\)"):
        to_h5(surface, tmp_path / "t.h5")


def test_vtp_holds_the_grid_as_quads_and_the_path_as_a_line(surface, tmp_path):
    coords = pd.DataFrame({"epoch": [1, 2, 3], "pc1": [-1.0, 0.0, 0.0], "pc2": [-1.0, 0.5, 0.0]})
    first, second = to_vtp(surface, tmp_path / "s.vtp", kind="robust", trajectory=coords)
    piece = ET.parse(first).getroot().find("PolyData/Piece")
    assert piece.get("NumberOfPoints") == "6" and piece.get("NumberOfPolys") == "2"
    pts = np.array(piece.find("Points/DataArray").text.split(), float).reshape(-1, 3)
    rows = surface[surface["kind"] == "robust"].sort_values(["alpha", "beta"])
    np.testing.assert_allclose(pts, rows[["alpha", "beta", "loss"]].to_numpy(), rtol=1e-15)
    conn = np.array(piece.find("Polys/DataArray[@Name='connectivity']").text.split(), int)
    assert conn.tolist() == [0, 2, 3, 1, 2, 4, 5, 3]
    line = ET.parse(second).getroot().find("PolyData/Piece")
    z = np.array(line.find("Points/DataArray").text.split(), float).reshape(-1, 3)[:, 2]
    assert z[0] == pytest.approx(rows["loss"].iloc[0]) and z[1] == pytest.approx(rows["loss"].iloc[3])


# ---------------------------------------------------------------------------------------------- figures


def test_figures_draw_the_table_values(surface, net):
    from landscape.plotting.weight_space import (plot_spectral_density, plot_training_path, plot_weight_contour,
                                                 plot_weight_slice_1d)

    one = pd.DataFrame({"direction": "random", "alpha": [-1.0, 0.0, 1.0] * 2, "kind": ["clean"] * 3 + ["robust"] * 3,
                        "loss": [1.0, 0.5, 2.0, 1.5, 1.0, 3.0], "acc": 0.5})
    ax = plot_weight_slice_1d(one)
    assert [ln.get_ydata().tolist() for ln in ax.get_lines()[:2]] == [[1.0, 0.5, 2.0], [1.5, 1.0, 3.0]]
    ax = plot_weight_contour(surface, kind="robust")
    assert ax.collections and "robust" in ax.get_title()
    coords = pd.DataFrame({"epoch": [1, 2, 3], "pc1": [-1.0, -0.5, 0.0], "pc2": [-1.0, 0.5, 0.0]})
    coords.attrs["ratio"] = [0.7, 0.2]
    ax = plot_training_path(surface, coords)
    path_line = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3][-1]
    assert path_line.get_xdata().tolist() == [-1.0, -0.5, 0.0] and "70.0 %" in ax.get_xlabel()
    dens = pd.DataFrame({"grid": np.tile(np.linspace(0, 1, 5), 2), "density": 1.0, "epoch": np.repeat([1, 9], 5)})
    ax = plot_spectral_density(dens)
    assert len(ax.get_lines()) == 2 and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="missing required column"):
        plot_spectral_density(dens.drop(columns="density"))


def test_report_figures_overlay_best_and_last_and_mark_the_best_epoch_on_each_path():
    from landscape.plotting.weight_space import plot_training_paths, plot_weight_slices_best_last

    one = pd.DataFrame({"direction": "random", "alpha": [-1.0, 0.0, 1.0] * 4, "kind": (["clean"] * 3 + ["robust"] * 3) * 2,
                        "loss": [1.0, 0.5, 2.0, 1.5, 1.0, 3.0, 1.2, 0.5, 2.5, 2.0, 1.0, 4.0], "acc": 0.5,
                        "label": ["best"] * 6 + ["last"] * 6})
    two = pd.concat([one.assign(run="a/s0"), one.assign(run="b/s0")], ignore_index=True)
    fig = plot_weight_slices_best_last(two)
    assert len(fig.axes) == 4 and fig.axes[1].get_title() == "robust loss — a/s0"
    lines = [ln.get_ydata().tolist() for ln in fig.axes[1].get_lines() if len(ln.get_xdata()) == 3]
    assert lines == [[1.5, 1.0, 3.0], [2.0, 1.0, 4.0]]  # best, last
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["best", "last"]

    a, b = np.meshgrid([-2.0, -1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij")
    grid = pd.DataFrame({"alpha": a.ravel(), "beta": b.ravel(), "kind": "clean", "loss": 1 + a.ravel() ** 2, "acc": 0.5})
    path = pd.DataFrame({"kind": "path", "epoch": [1, 5, 9], "pc1": [-2.0, -1.0, 0.0], "pc2": [-1.0, 0.5, 0.0],
                         "pc1_ratio": 0.7, "pc2_ratio": 0.2})
    table = pd.concat([pd.concat([grid, path]).assign(run="a/s0"), grid.assign(run="b/s0")], ignore_index=True)
    fig = plot_training_paths(table, best={"a/s0": 5})
    first, second = fig.axes[0], next(ax for ax in fig.axes if ax.get_title().startswith("b/s0"))
    diamond = [ln for ln in first.get_lines() if ln.get_marker() == "D"]
    assert [ln.get_xdata().tolist() for ln in diamond] == [[-1.0]] and "70.0 %" in first.get_xlabel()
    assert "no path rows" in second.get_title()  # a surface without its path: drawn alone
    with pytest.raises(ValueError, match="no loss surface"):
        plot_training_paths(pd.concat([grid.iloc[:0], path]))


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from landscape import create_model
    from landscape.checkpoints import save_checkpoint

    folder = tmp_path_factory.mktemp("run")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("small_cnn", width=4).eval()
        for e in (1, 2, 3):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.05)
            save_checkpoint(folder / f"model_e{e:03d}.pt", model, epoch=e)
    return folder


def test_cli_weight_slice_and_pca_path(run_folder, tmp_path, capsys):
    from landscape.cli import main

    common = ["--data", "digits", "--index", "0..15", "--grid", "3", "--quiet", "--out", str(tmp_path)]
    assert main(["slice", str(run_folder / "model_e003.pt"), "--space", "weights", "--dirs", "random",
                 "--loss", "both", *common]) == 0
    table = pd.read_parquet(tmp_path / "weight_slices_1d.parquet")
    assert len(table) == 6 and (tmp_path / "weight_slices_1d.png").stat().st_size > 5000
    assert main(["slice", str(run_folder), "--space", "weights", "--pca", "--loss", "clean", *common,
                 "--export", "vtp"]) == 0
    coords = pd.read_parquet(tmp_path / "weight_path.parquet")
    assert coords["epoch"].tolist() == [1, 2, 3]
    assert {"weight_path_surface.parquet", "weight_path.vtp", "weight_path_trajectory.vtp", "weight_path.png"} <= {
        p.name for p in tmp_path.iterdir()}
    assert "PCA plane explains" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--dirs", "gradient"], "takes --dirs out of random, eigen"),
    (["--clip"], "--clip is an input-space option"),
    (["--dirs", "random", "random", "random", "--kind", "2d"], "two --dirs"),
])
def test_cli_weight_errors_exit_2_with_one_line(run_folder, tmp_path, capsys, extra, message):
    from landscape.cli import main

    rc = main(["slice", str(run_folder / "model_e001.pt"), "--space", "weights", "--out", str(tmp_path), "--quiet",
               *extra])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_weight_only_flags_need_space_weights(run_folder, tmp_path, capsys):
    from landscape.cli import main

    assert main(["slice", str(run_folder / "model_e001.pt"), "--pca", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--pca needs --space weights" in capsys.readouterr().err
