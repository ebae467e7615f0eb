"""Test fixtures: synthetic run tables with the documented columns, for thumbnails, examples and tests; and
deliberately masked model wrappers (for the sanity flags of ``landscape evaluate``: tests and bench_masking).

These are *made-up numbers shaped like a robust-overfitting run* (robust test accuracy peaks early, then
falls while the input loss landscape sharpens); they exercise the figures and the report without training
anything. Never use them as results.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .models import create_model
from .runs import run_file

__all__ = ["synthetic_tables", "write_synthetic_run", "write_synthetic_study", "clean_trained_mlp", "Quantised",
           "Softmax", "Noisy", "NanGrad"]

_MEASURES = ("grad_l1", "grad_l2", "curv_adv", "curv_rand", "taylor_gap", "logit_var", "fo_share")


def synthetic_tables(run: str = "pgd_at", *, epochs: int = 30, n: int = 64, ro: float = 1.0,
                     seed: int = 0) -> dict:
    """Tables of one synthetic run.

    Args:
        run: value of the ``run`` column.
        epochs: number of epochs (1..epochs).
        n: samples per (epoch, split) in the per-sample table.
        ro: strength of robust overfitting, 0 (none: accuracy plateaus) .. 1 (strong).
        seed: random seed.

    Returns:
        dict with ``trajectory``, ``samples``, ``slices_1d``, ``slices_2d``, ``weight_slices_1d``,
        ``weight_path_surface``, ``metrics`` (DataFrames, columns as in docs/internals.md and
        docs/weight_slices.md; the slice tables carry an extra ``epoch`` column for the best and last epoch) and
        ``settings`` (dict).
    """
    if epochs < 2 or n < 2:
        raise ValueError(f"synthetic_tables: need epochs >= 2 and n >= 2, got epochs={epochs}, n={n}")
    rng = np.random.default_rng(seed)
    ep = np.arange(1, epochs + 1)
    peak = max(2, round(epochs * 0.4))
    rise = 1 - np.exp(-ep / (0.25 * peak))
    decline = ro * np.clip(ep - peak, 0, None) / epochs
    level = {  # expected (robust/clean) accuracy per split
        ("test", "acc_adv"): 0.48 * rise - 0.25 * decline,
        ("test", "acc_clean"): 0.80 * rise - 0.06 * decline,
        ("train", "acc_adv"): 0.48 * rise + 0.9 * decline,
        ("train", "acc_clean"): 0.82 * rise + 0.3 * decline,
    }
    sharp = 1 + rise * 0.3 + 4.0 * decline  # how sharp the test landscape is
    sample_rows = []
    for i, e in enumerate(ep):
        for split in ("train", "test"):
            s = sharp[i] if split == "test" else 1 + rise[i] * 0.3 - 0.5 * decline[i]
            p_adv = float(np.clip(level[(split, "acc_adv")][i], 0.02, 0.99))
            p_clean = float(np.clip(level[(split, "acc_clean")][i], p_adv, 0.995))
            correct_adv = rng.random(n) < p_adv
            correct_clean = correct_adv | (rng.random(n) < (p_clean - p_adv) / (1 - p_adv))
            grad = rng.lognormal(np.log(0.6 * s), 0.5, n)
            frame = pd.DataFrame({
                "sample": np.arange(n), "label": rng.integers(0, 10, n),
                "loss_clean": rng.gamma(2.0, 0.25, n) + (~correct_clean) * 1.2,
                "loss_adv": rng.gamma(2.0, 0.35 * s, n) + (~correct_adv) * 1.0,
                "correct_clean": correct_clean, "correct_adv": correct_adv,
                "grad_l1": grad, "grad_l2": grad / 6.0, "grad_linf": grad / 40.0,
                "curv_adv": rng.lognormal(np.log(2.0 * s ** 1.5), 0.6, n),
                "curv_rand": rng.normal(0.05 * s, 0.05, n),
                "taylor_gap": rng.gamma(2.0, 0.08 * s ** 1.5, n),
                "logit_var": rng.gamma(3.0, 0.4 * s, n),
                "fo_share": np.clip(rng.beta(4.0, 1.5 * s, n), 0.01, 1.0),  # falls as the landscape sharpens
                "epoch": int(e), "split": split, "checkpoint": f"epoch_{e:03d}.pt",
            })
            sample_rows.append(frame)
    samples = pd.concat(sample_rows, ignore_index=True)
    samples.insert(0, "run", run)
    trajectory = _aggregate(samples)
    for col in ("acc_adv", "acc_clean"):  # smooth curves, like a real run evaluated on many samples
        split = trajectory["split"].to_numpy()
        idx = trajectory["epoch"].to_numpy() - 1
        expected = np.array([level[(s, col)][i] for s, i in zip(split, idx)])
        trajectory[col] = np.clip(expected + rng.normal(0, 0.008, len(expected)), 0, 1)
    loss_scale = {"test": 1 + 1.5 * decline, "train": 1 - 0.5 * decline}
    for col, base in (("loss_adv", 1.6), ("loss_clean", 0.9)):
        trajectory[col] = [base * (1.1 - 0.5 * rise[i]) * loss_scale[s][i] * (1 if col == "loss_adv" else 0.8)
                           + rng.normal(0, 0.01) for s, i in zip(trajectory["split"], trajectory["epoch"] - 1)]
    metrics = trajectory[["epoch", "split", "acc_clean", "acc_adv", "loss_clean", "loss_adv"]].copy()
    metrics["lr"] = np.where(metrics["epoch"] <= peak, 0.1, 0.01)
    metrics["time_s"] = np.round(rng.uniform(1.0, 1.5, len(metrics)), 3)
    test_acc = trajectory[trajectory["split"] == "test"].set_index("epoch")["acc_adv"]
    best, last = int(test_acc.idxmax()), int(ep[-1])
    sharp_at = {best: sharp[best - 1], last: sharp[-1]}
    return {
        "trajectory": trajectory,
        "samples": samples,
        "metrics": metrics,
        "slices_1d": _slices_1d(sharp_at, rng),
        "slices_2d": _slices_2d(sharp_at, rng),
        "weight_slices_1d": _weight_slices_1d(sharp_at, rng),
        "weight_path_surface": _weight_path_surface(ep, rng),
        "settings": {"run": run, "eps": 0.1, "attack": "pgd", "steps": 10, "n": n, "seed": seed,
                     "synthetic": True},
    }


def _aggregate(samples: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (run, epoch, split), g in samples.groupby(["run", "epoch", "split"], sort=True):
        row = {"run": run, "epoch": epoch, "checkpoint": g["checkpoint"].iloc[0], "split": split, "n": len(g),
               "acc_clean": g["correct_clean"].mean(), "acc_adv": g["correct_adv"].mean(),
               "loss_clean": g["loss_clean"].mean(), "loss_adv": g["loss_adv"].mean()}
        for m in _MEASURES:
            v = g[m].to_numpy()
            row.update({f"{m}_mean": v.mean(), f"{m}_median": np.median(v), f"{m}_q10": np.quantile(v, 0.1),
                        f"{m}_q90": np.quantile(v, 0.9)})
        row.update({"nonfinite": 0, "error": None})
        rows.append(row)
    return pd.DataFrame(rows)


def _slices_1d(sharp_at: dict, rng, samples: int = 16) -> pd.DataFrame:
    a = np.linspace(-1.0, 1.0, 41)
    parts = []
    for epoch, s in sharp_at.items():
        for direction, k in (("adversarial", 1.0), ("random", 0.15)):
            for i in range(samples):
                l0 = rng.gamma(2.0, 0.2)
                slope = k * rng.uniform(0.6, 1.4) * s
                curv = k * rng.uniform(0.5, 1.5) * s * 2.0
                loss = l0 + np.log1p(np.exp(slope * 2 * a + 0.5 * curv * a ** 2 - 1.0))
                margin = 2.0 - (loss - l0) * 1.5
                parts.append(pd.DataFrame({"sample": i, "direction": direction, "a": a, "loss": loss,
                                           "correct": margin > 0, "margin": margin, "epoch": int(epoch)}))
    return pd.concat(parts, ignore_index=True)


def _slices_2d(sharp_at: dict, rng, samples: int = 2, size: int = 25) -> pd.DataFrame:
    g = np.linspace(-1.0, 1.0, size)
    A, B = np.meshgrid(g, g, indexing="xy")
    parts = []
    for epoch, s in sharp_at.items():
        for i in range(samples):
            l0 = rng.gamma(2.0, 0.2)
            loss = l0 + np.log1p(np.exp(s * (1.6 * A + 0.8 * A ** 2 + 0.3 * B ** 2 + 0.4 * A * B) - 1.0))
            margin = 2.0 - (loss - l0) * 1.5
            parts.append(pd.DataFrame({"sample": i, "direction1": "adversarial", "direction2": "random",
                                       "a": A.ravel(), "b": B.ravel(), "loss": loss.ravel(),
                                       "correct": margin.ravel() > 0, "margin": margin.ravel(),
                                       "epoch": int(epoch)}))
    return pd.concat(parts, ignore_index=True)


def _weight_slices_1d(sharp_at: dict, rng, points: int = 21) -> pd.DataFrame:
    """A made-up ``weight_slices_1d.parquet`` (clean and robust loss along one random weight direction),
    sharper where ``sharp_at`` says so, as the demo writes it at the best and the last epoch."""
    alpha = np.linspace(-1.0, 1.0, points)
    parts = []
    for epoch, s in sharp_at.items():
        for kind, l0, k in (("clean", 0.3, 0.8), ("robust", 0.9, 1.2)):
            loss = l0 + k * s * alpha ** 2 + 0.05 * alpha + rng.normal(0, 0.005, points)
            parts.append(pd.DataFrame({"direction": "random", "alpha": alpha, "kind": kind, "loss": loss,
                                       "acc": np.clip(0.9 - 0.3 * (loss - l0), 0, 1), "epoch": int(epoch),
                                       "checkpoint": f"epoch_{int(epoch):03d}.pt"}))
    return pd.concat(parts, ignore_index=True)


def _weight_path_surface(ep: np.ndarray, rng, size: int = 15) -> pd.DataFrame:
    """A made-up ``weight_path_surface.parquet``: the clean loss on a PCA plane and the path's rows
    (``kind == "path"``), laid out as :func:`landscape.weight_slices.path_surface` writes them."""
    t = (ep - ep[-1]) / max(ep[-1] - ep[0], 1)  # -1 .. 0, the last epoch at the origin
    pc1 = 10.0 * t + rng.normal(0, 0.05, len(ep))
    pc2 = -4.0 * t * (1 + t) * 2 + rng.normal(0, 0.05, len(ep))
    pc1[-1] = pc2[-1] = 0.0
    a = np.linspace(pc1.min() - 2.5, 2.5, size)
    b = np.linspace(pc2.min() - 1.0, pc2.max() + 1.0, size)
    A, B = np.meshgrid(a, b, indexing="ij")
    loss = 0.2 + 0.02 * A ** 2 + 0.05 * (B - 0.2 * A) ** 2
    grid = pd.DataFrame({"direction1": "pc1", "direction2": "pc2", "alpha": A.ravel(), "beta": B.ravel(),
                         "kind": "clean", "loss": loss.ravel(), "acc": np.clip(1.0 - loss.ravel() / 3, 0, 1)})
    path = pd.DataFrame({"direction1": "pc1", "direction2": "pc2", "kind": "path", "epoch": ep.astype(int),
                         "checkpoint": [f"epoch_{e:03d}.pt" for e in ep], "pc1": pc1, "pc2": pc2,
                         "residual": np.linspace(0.3, 0.0, len(ep)), "pc1_ratio": 0.8, "pc2_ratio": 0.1})
    return pd.concat([grid, path], ignore_index=True)


#: Tables :func:`write_synthetic_run` writes as Parquet (keys of :data:`landscape.runs.RUN_FILES`).
PARQUET_TABLES = ("trajectory", "samples", "slices_1d", "slices_2d", "weight_slices_1d", "weight_path_surface")
#: The tables of the sliced runs only (the demo slices the first seed of two methods).
SLICE_TABLES = ("slices_1d", "slices_2d", "weight_slices_1d", "weight_path_surface")


def write_synthetic_run(folder, run: str | None = None, *, skip=(), **kwargs) -> Path:
    """Write one synthetic run directory (the files ``analyse_trajectory``/``train`` write) and return it.

    Files: ``trajectory.parquet``, ``samples.parquet``, ``slices_1d.parquet``, ``slices_2d.parquet``,
    ``weight_slices_1d.parquet``, ``weight_path_surface.parquet``, ``metrics.csv``, ``settings.json``. ``run`` defaults to the folder name; ``kwargs`` go to
    :func:`synthetic_tables`; table keys in ``skip`` are not written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tables = synthetic_tables(run or folder.name, **kwargs)
    for key in PARQUET_TABLES:
        if key not in skip:
            tables[key].to_parquet(folder / run_file(key), index=False)
    tables["metrics"].to_csv(folder / run_file("metrics"), index=False)
    (folder / run_file("settings")).write_text(json.dumps(tables["settings"], indent=2))
    return folder


#: Synthetic methods of :func:`write_synthetic_study`: name -> robust-overfitting strength.
STUDY_METHODS = {"standard": 1.3, "pgd_at": 1.0, "at_advlc": 0.25, "at_gradreg": 0.4}


def write_synthetic_study(root, *, methods=STUDY_METHODS, seeds=(0, 1, 2), sliced=("pgd_at", "at_advlc"),
                          epochs: int = 12, n: int = 24) -> Path:
    """Write a folder laid out like ``make demo``'s ``runs/demo`` and return it.

    One run per method and seed in ``root/<method>/s<seed>``: ``metrics.csv`` and ``settings.json`` in the
    run folder, the analysis tables in its ``analysis/`` subfolder; the slice tables (input and weight space) only for
    the first seed of the ``sliced`` methods (as the demo does). Numbers are made up (see :func:`synthetic_tables`).
    """
    root = Path(root)
    for i, (method, ro) in enumerate(methods.items()):
        for seed in seeds:
            folder = root / method / f"s{seed}"
            skip = () if method in sliced and seed == seeds[0] else SLICE_TABLES
            write_synthetic_run(folder / "analysis", run=f"{method}/s{seed}", epochs=epochs, n=n, ro=ro,
                                seed=100 * i + seed, skip=skip)
            for key in ("metrics", "settings"):  # the training files live in the run folder itself
                (folder / "analysis" / run_file(key)).replace(folder / run_file(key))
            _final_eval(folder / "analysis", rng=np.random.default_rng(7 * i + seed))
    _claims().to_csv(root / run_file("claims"), index=False)
    return root


def _final_eval(folder: Path, rng) -> pd.DataFrame:
    """A made-up ``final_eval.csv``: the run's best and last checkpoint under PGD and AutoAttack."""
    traj = pd.read_parquet(folder / run_file("trajectory"))
    test = traj[traj["split"] == "test"].sort_values("epoch")
    rows = []
    for name, row in (("best", test.loc[test["acc_adv"].idxmax()]), ("last", test.iloc[-1])):
        pgd = float(row["acc_adv"])
        rows.append({"which": name, "epoch": int(row["epoch"]), "checkpoint": str(row["checkpoint"]),
                     "acc_clean": float(row["acc_clean"]), "acc_pgd": pgd,
                     "acc_autoattack": max(0.0, pgd - rng.uniform(0.01, 0.04)), "error": None})
    table = pd.DataFrame(rows)
    table.to_csv(folder / run_file("final_eval"), index=False)
    return table


def _claims() -> pd.DataFrame:
    """A made-up ``claims.csv`` with the columns of the demo study's claims table."""
    return pd.DataFrame({
        "claim": ["RO gap under PGD-AT", "AdvLC reduces the RO gap", "curvature tracks the robust loss"],
        "evidence": ["best − last robust acc, pgd_at (pp, mean over seeds)",
                     "gap(pgd_at) − gap(at_advlc) (pp)", "Spearman ρ, epochs after the best one"],
        "value": [14.2, 9.8, 0.81],
        "holds": [True, True, True],
    })


# ------------------------------------------------------------------ deliberately masked models
def clean_trained_mlp(x: torch.Tensor, y: torch.Tensor, *, hidden=(32,), activation: str = "softplus",
                      steps: int = 100, lr: float = 0.5, momentum: float = 0.9, seed: int = 0) -> nn.Module:
    """An honest clean-trained MLP (accurate, not robust): ``steps`` full-batch SGD steps on ``(x, y)``, initial
    weights seeded by ``seed`` without touching the caller's RNG; returned in eval mode with no ``.grad``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model("mlp", hidden=tuple(hidden), activation=activation)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


class Quantised(nn.Module):
    """Masked: the input is quantised to ``levels`` steps, ``round(x·k)/k``; its gradient is 0 everywhere."""

    def __init__(self, net: nn.Module, levels: int = 4):
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x):
        return self.net(torch.round(x * self.levels) / self.levels)


class Softmax(nn.Module):
    """Masked: outputs probabilities (``log=False``) or log-probabilities (``log=True``) instead of logits."""

    def __init__(self, net: nn.Module, log: bool = False):
        super().__init__()
        self.net, self.log = net, log

    def forward(self, x):
        z = self.net(x)
        return z.log_softmax(1) if self.log else z.softmax(1)


class Noisy(nn.Module):
    """Masked: Gaussian input noise in eval mode too (a randomised defence)."""

    def __init__(self, net: nn.Module, sigma: float = 0.05):
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x):
        return self.net(x + self.sigma * torch.randn_like(x))


class NanGrad(nn.Module):
    """Finite outputs, NaN input gradients: ``torch.where`` selects 0, the unselected ``sqrt(-x)`` poisons backward."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        trap = torch.where(x > 2, torch.sqrt(-x), torch.zeros_like(x)).flatten(1).sum(1, keepdim=True)
        return self.net(x) + trap
