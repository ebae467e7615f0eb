"""Training loops that produce checkpoints for the trajectory analysis.

Methods (:mod:`landscape.objectives`): ``standard``, ``standard_gradreg`` (standard training +
input-gradient regularisation), ``pgd_at``, ``at_decomposed`` (AT as weighted clean term + adversarial
excess), ``at_advlc`` (Li & Spratling 2023), ``at_gradreg`` (AT + input-gradient regularisation), and the
similar methods ``trades``, ``mart``, ``awp_at``, ``awp_trades``, ``cure``, ``llr`` with their published
defaults.

``x_adv`` comes from :func:`landscape.attacks.pgd` with ``train_mode=True`` (the model attacked in training
mode, as in the official AT/AdvLC loops). SGD with momentum, step learning-rate decay (×0.1 at fractions of
the run), weight decay. The official protocol's options — no PGD random start, the clean forward pass before
the attack, crop/flip augmentation, dropping the last partial batch, SWA — are arguments;
:func:`preset` returns the official CIFAR-10 configuration.

Files: ``model_e{epoch:03d}.pt`` (official AdvLC checkpoint dict, weights only: ``optimizer`` is None) for
every epoch, or with ``save_every=k`` for epoch 1, every k-th, the last and the best so far;
``resume.pt`` (weights + optimizer + counters of the last finished epoch, removed when the run is complete);
``model_swa.pt`` with SWA; ``metrics.csv``; ``settings.json``. An interrupted run resumes from
``resume.pt`` and ends with the same weights as an uninterrupted one.

Determinism: all randomness (shuffling, augmentation, PGD random starts, any dropout) is derived from
``(seed, epoch, batch)``, so the state to resume is the model, the optimizer (and the SWA average) and the
epoch number. The caller's global RNG state is left untouched.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from .datasets import add_label_noise, as_tensors, load_dataset
from ._base import LandscapeError, check_batch, derive_seed, eval_mode, model_device, model_dtype, set_mode
from ._io import atomic_write
from .runs import Run, run_file
from ._version import __version__
from .objectives import DEFAULT_LAM, METHODS, batch_loss, method_params
from .protocol import LATER_DEFAULTS, PRESETS, check_settings, preset

__all__ = ["METHODS", "DEFAULT_LAM", "METRIC_COLUMNS", "SMALL_EPS_COLUMNS", "PRESETS", "preset", "train",
           "evaluate", "seeded_model", "lr_at", "lam_at", "prepare_data", "checkpoint_path", "list_checkpoints",
           "kept_epochs"]

#: columns of ``metrics.csv`` (long format: one row per evaluated epoch and split).
METRIC_COLUMNS = ["epoch", "split", "acc_clean", "acc_adv", "loss_clean", "loss_adv", "lr", "time_s"]
#: extra ``metrics.csv`` columns when a second, small evaluation radius ``small_eps`` is given.
SMALL_EPS_COLUMNS = ["acc_adv_small", "loss_adv_small"]

_CKPT_RE = re.compile(r"^model_e(\d+)\.pt$")
_RESUME = "resume.pt"
_SWA = "model_swa.pt"
# Settings that may differ between an interrupted run and its resumption.
_RESUME_FREE = {"landscape_version", "progress"}
# ----------------------------------------------------------------------------------------------- helpers
# Streams of randomness, each seeded by derive_seed(seed, STREAM, ...) so that no two uses share a seed.
_SHUFFLE, _TORCH_RNG, _TRAIN_ATTACK, _EVAL_SUBSET, _EVAL_ATTACK, _AUGMENT = range(6)


def seeded_model(arch: str, seed: int, **kwargs) -> nn.Module:
    """``create_model(arch, **kwargs)`` with weights initialised from ``seed`` (global RNG left untouched)."""
    from .models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return create_model(arch, **kwargs)


def lr_at(epoch: int, *, lr: float, epochs: int, milestones: Sequence[float] = (0.5, 0.75),
          gamma: float = 0.1) -> float:
    """Learning rate of 1-based ``epoch``: ``lr · gamma^m``, m = #milestones with ``epoch > floor(f·epochs)``.

    With 150 epochs and milestones (0.5, 0.75) the rate drops ×0.1 after epoch 75 and again after 112
    (epochs 76–112 use ``lr/10``, 113–150 ``lr/100``), as in the step schedules of Rice et al. and AdvLC.
    """
    drops = sum(epoch > int(f * epochs) for f in milestones)
    return float(lr) * gamma ** drops


def lam_at(epoch: int, *, lam: float, warmup: int = 0) -> float:
    """Regularisation weight of 1-based ``epoch``: linear ramp ``lam · min(1, epoch / warmup)``."""
    if warmup <= 0:
        return float(lam)
    return float(lam) * min(1.0, epoch / warmup)


def checkpoint_path(out_dir: str | os.PathLike, epoch: int) -> Path:
    """``out_dir/model_e{epoch:03d}.pt``."""
    return Path(out_dir) / f"model_e{epoch:03d}.pt"


def kept_epochs(epochs: int, save_every: int | None, best: int | None = None) -> list[int]:
    """Epochs whose ``model_eNNN.pt`` a finished run keeps: all, or epoch 1, every ``save_every``-th, the last
    and ``best`` (sorted)."""
    if save_every is None or save_every <= 1:
        return list(range(1, epochs + 1))
    keep = {1, epochs, *range(save_every, epochs + 1, save_every)}
    return sorted(keep | ({best} if best else set()))


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(epoch, path), ...]`` of the ``model_eNNN.pt`` files in ``out_dir``, sorted by epoch."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := _CKPT_RE.match(p.name))]
    return sorted(found)


def prepare_data(data, *, label_noise: float = 0.0, num_classes: int, seed: int = 0):
    """Validate ``((x_train, y_train), (x_test, y_test))`` and flip a fraction of the *training* labels.

    Args:
        data: pair of splits; ``x`` (N, ...) in [0,1] (float or uint8), ``y`` (N,) integer labels.
        label_noise: fraction ``p`` in [0, 1) of training labels replaced by a different class
            (symmetric noise, :func:`landscape.datasets.add_label_noise`, seeded by ``seed``). Test labels are
            never changed.
        num_classes: number of classes K (labels must be < K).
        seed: seeds the label noise.

    Returns:
        ``((x_train, y_train_noisy), (x_test, y_test))`` as float tensors and int64 labels.
    """
    try:
        (x_tr, y_tr), (x_te, y_te) = data
    except (TypeError, ValueError):
        raise TypeError("data must be ((x_train, y_train), (x_test, y_test))") from None
    x_tr, y_tr = check_batch(x_tr, y_tr, name="x_train")
    x_te, y_te = check_batch(x_te, y_te, name="x_test")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(f"train inputs {tuple(x_tr.shape[1:])} and test inputs {tuple(x_te.shape[1:])} "
                         "differ in shape")
    top = int(max(y_tr.max(), y_te.max()))
    if top >= num_classes:
        raise ValueError(f"label {top} is out of range for a model with {num_classes} classes")
    if label_noise:
        y_tr = add_label_noise(y_tr, label_noise, num_classes, seed)
    return (x_tr, y_tr), (x_te, y_te)


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10,
             step_size: float | None = None, norm: str = "linf", batch_size: int = 256,
             seed: int = 0) -> dict[str, float]:
    """Clean and PGD accuracy/loss of ``model`` on (x, y), attacked in eval mode.

    Args:
        model: classifier; evaluated in eval mode (its mode is restored).
        x: (N, ...) inputs in [0,1]. y: (N,) labels.
        eps: radius of the PGD attack (``eps=0`` makes ``*_adv`` equal ``*_clean``); ``norm`` linf or l2.
        steps, step_size: PGD steps and step (default ``2.5·eps/steps``), random start seeded by ``seed``.
        batch_size: evaluation batch size.

    Returns:
        ``{"acc_clean", "acc_adv", "loss_clean", "loss_adv"}``: accuracies in [0,1], mean cross-entropies.
    """
    from .attacks import pgd

    totals = dict(acc_clean=0.0, acc_adv=0.0, loss_clean=0.0, loss_adv=0.0)
    n = x.shape[0]
    with eval_mode(model):
        for i, start in enumerate(range(0, n, batch_size)):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            if eps > 0:
                x_adv, _ = pgd(model, xb, yb, eps, steps=steps, step_size=step_size, norm=norm,
                               seed=derive_seed(seed, _EVAL_ATTACK, i), train_mode=False)
            else:
                x_adv = xb
            with torch.no_grad():
                for tag, inp in (("clean", xb), ("adv", x_adv)):
                    logits = model(inp)
                    totals[f"loss_{tag}"] += float(F.cross_entropy(logits, yb, reduction="sum"))
                    totals[f"acc_{tag}"] += float((logits.argmax(1) == yb).sum())
    return {k: v / n for k, v in totals.items()}


# ----------------------------------------------------------------------------------------------- training
def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                 epoch: int, settings: Mapping, swa=None) -> float:
    """One pass over (x, y) in a seeded random order; returns the mean training objective.

    With ``swa`` (a ``torch.optim.swa_utils.AveragedModel``) and ``epoch >= swa_start`` the average is
    updated after every ``swa_every``-th batch of the epoch (1-based, as the official code), or after the
    last batch when ``swa_every`` is None.
    """
    from .augmentation import augment

    seed = settings["seed"]
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(derive_seed(seed, _SHUFFLE, epoch)))
    order = order.to(x.device)
    bs = settings["batch_size"]
    n_batches = x.shape[0] // bs if settings["drop_last"] and x.shape[0] >= bs else math.ceil(x.shape[0] / bs)
    lam = lam_at(epoch, lam=settings["lam"], warmup=settings["lam_warmup"])
    averaging = swa is not None and epoch >= settings["swa_start"]
    aug_gen = torch.Generator().manual_seed(derive_seed(seed, _AUGMENT, epoch))
    total, count = 0.0, 0
    model.train()
    with torch.random.fork_rng(devices=[]):  # dropout etc. seeded per epoch; caller's RNG untouched
        torch.manual_seed(derive_seed(seed, _TORCH_RNG, epoch))
        for b in range(n_batches):
            idx = order[b * bs:(b + 1) * bs]
            xb, yb = x[idx], y[idx]
            if settings["augment"] != "none":
                xb = augment(xb, settings["augment"], pad=settings["crop_pad"], generator=aug_gen)
            loss = batch_loss(model, xb, yb, method=settings["method"], eps=settings["eps"],
                              steps=settings["steps"], step_size=settings["step_size"], norm=settings["norm"],
                              lam=lam, top=settings["top"], grad_norm=settings["grad_norm"],
                              clean_weight=settings["clean_weight"], excess_weight=settings["excess_weight"],
                              random_start=settings["random_start"], clean_first=settings["clean_first"],
                              seed=derive_seed(seed, _TRAIN_ATTACK, epoch, b), pgd_start=settings["pgd_start"],
                              awp_gamma=settings["awp_gamma"], cure_h=settings["cure_h"],
                              llr_mu=settings["llr_mu"])
            value = float(loss.detach())
            if not math.isfinite(value):
                raise LandscapeError(f"training diverged at epoch {epoch} (loss {value}); "
                                     "try a smaller lr or lam")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += value * xb.shape[0]
            count += xb.shape[0]
            every = settings["swa_every"]
            if averaging and ((every is None and b == n_batches - 1) or (every and (b + 1) % every == 0)):
                swa.update_parameters(model)
    return total / count


def _evaluate_splits(model, splits: Mapping, settings: Mapping) -> dict[str, dict[str, float]]:
    """:func:`evaluate` on each named split, plus ``acc_adv_small``/``loss_adv_small`` on the test split
    when ``small_eps`` is set (NaN on the others: the evaluation is the costly part of a small run)."""
    results = {}
    for split, (xs, ys) in splits.items():
        r = evaluate(model, xs, ys, eps=settings["eps"], steps=settings["eval_steps"], norm=settings["norm"],
                     seed=settings["seed"])
        if settings["small_eps"] is not None and split == "test":
            small = evaluate(model, xs, ys, eps=settings["small_eps"], steps=settings["eval_steps"],
                             norm=settings["norm"], seed=settings["seed"])
            r.update(acc_adv_small=small["acc_adv"], loss_adv_small=small["loss_adv"])
        results[split] = r
    return results


def _run_epoch(model, optimizer, train_split, test_eval, eval_tr, *, epoch: int, settings: Mapping,
               state: dict, bar, swa=None) -> list[dict]:
    """Train one epoch, evaluate when due (updating the best-so-far counters in ``state``); return the
    new metrics rows (``test_swa`` rows for the SWA average once it exists)."""
    t0 = time.perf_counter()
    rate = lr_at(epoch, lr=settings["lr"], epochs=settings["epochs"], milestones=settings["lr_milestones"])
    for group in optimizer.param_groups:
        group["lr"] = rate
    x_tr, y_tr = train_split
    _train_epoch(model, optimizer, x_tr, y_tr, epoch=epoch, settings=settings, swa=swa)
    if epoch % settings["eval_every"] and epoch != settings["epochs"]:
        return []
    results = _evaluate_splits(model, {"train": (x_tr[eval_tr], y_tr[eval_tr]), "test": test_eval}, settings)
    if swa is not None and epoch >= settings["swa_start"]:
        _swa_batch_norm(swa, x_tr, settings["batch_size"])
        results["test_swa"] = _evaluate_splits(swa.module, {"test": test_eval}, settings)["test"]
    elapsed = time.perf_counter() - t0
    test = results["test"]
    state["best_acc1"] = max(state["best_acc1"], 100 * test["acc_clean"])
    if 100 * test["acc_adv"] >= state["best_pgd"]:  # the official rule: the latest epoch wins ties
        state["best_pgd"], state["best_epoch"] = 100 * test["acc_adv"], epoch
    bar.set_postfix(test_adv=f"{test['acc_adv']:.3f}", train_adv=f"{results['train']['acc_adv']:.3f}")
    return [dict(epoch=epoch, split=split, **r, lr=rate, time_s=elapsed) for split, r in results.items()]


def _swa_batch_norm(swa, x: torch.Tensor, batch_size: int) -> None:
    """Recompute the averaged model's batch-norm statistics on the training inputs (no-op without BN)."""
    from torch.optim.swa_utils import update_bn

    update_bn((x[i:i + batch_size] for i in range(0, x.shape[0], batch_size)), swa)


def _eval_subset(n: int, eval_n: int | None, seed: int) -> torch.Tensor:
    """Fixed random subset of ``eval_n`` of ``n`` indices (all of them when ``eval_n`` is None)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, _EVAL_SUBSET)))
    return perm if eval_n is None or eval_n >= n else perm[:eval_n].sort().values


def _write_settings(out: Path, settings: Mapping) -> None:
    Run(out).write("settings", dict(settings), sort_keys=True)


def _metric_columns(settings: Mapping) -> list[str]:
    return METRIC_COLUMNS + (SMALL_EPS_COLUMNS if settings["small_eps"] is not None else [])


def _write_metrics(out: Path, rows: list[dict], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    Run(out).write("metrics", df)
    return df


def _check_same_run(out: Path, settings: dict) -> None:
    """LandscapeError unless ``out/settings.json`` describes the same run as ``settings``."""
    path = out / run_file("settings")
    try:
        old = {**LATER_DEFAULTS, **json.loads(path.read_text())}
    except (OSError, ValueError):
        raise LandscapeError(f"cannot resume in {out}: settings.json is missing or unreadable") from None
    diff = sorted(k for k in (set(old) | set(settings)) - _RESUME_FREE if old.get(k) != settings.get(k))
    if diff:
        show = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in diff[:4])
        raise LandscapeError(f"cannot resume in {out}: settings differ ({show}); use another out_dir")


def _load_state(out: Path, settings: dict, resume: bool) -> dict | None:
    """The state to continue a run already in ``out`` (None for a new run).

    ``{'epoch', 'state_dict', 'optimizer' (None when the run is complete), 'best_acc1', 'best_pgd',
    'best_epoch', 'swa' (or None)}``, from ``resume.pt``, or from the last checkpoint when the run is
    complete or was written before ``resume.pt`` existed (its checkpoints held the optimizer).
    """
    ckpts = list_checkpoints(out)
    resume_file = out / _RESUME
    if not ckpts and not resume_file.is_file():
        return None
    if not resume:
        raise LandscapeError(f"{out} already holds a run ({(ckpts[-1][1] if ckpts else resume_file).name}); "
                             "pass resume=True to continue that run or choose another out_dir")
    _check_same_run(out, settings)
    if resume_file.is_file():
        return _torch_load(resume_file)
    raw = _torch_load(ckpts[-1][1])
    if raw.get("optimizer") is None and ckpts[-1][0] != settings["epochs"]:
        raise LandscapeError(f"cannot resume in {out}: {_RESUME} is missing and {ckpts[-1][1].name} holds "
                             "no optimizer state; use another out_dir")
    return dict(raw, best_epoch=None, swa=None)


def _torch_load(path: Path) -> dict:
    """A dict written by this module, read with ``weights_only=True``."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user-facing resume error
        raise LandscapeError(f"cannot resume from {path}: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict) or "state_dict" not in raw:
        raise LandscapeError(f"cannot resume from {path}: not a checkpoint written by landscape.training")
    return raw


def _save_epoch(out: Path, model, optimizer, swa, *, epoch: int, settings: Mapping, state: dict,
                previous_best: int | None) -> None:
    """Write this epoch's files: its checkpoint if kept, the SWA model, then the resume state; drop the
    checkpoint of a best epoch that a newer best replaced (unless kept for another reason)."""
    from .checkpoints import save_checkpoint

    best = dict(best_acc1=state["best_acc1"], best_pgd=state["best_pgd"])
    every = settings["save_every"]
    if every is None or epoch in kept_epochs(settings["epochs"], every, state["best_epoch"]) \
            or epoch == state["best_epoch"]:
        save_checkpoint(checkpoint_path(out, epoch), model, epoch=epoch, **best)
    if swa is not None and epoch >= settings["swa_start"]:
        save_checkpoint(out / _SWA, swa.module, epoch=epoch, n_averaged=int(swa.n_averaged))
    if every is not None and previous_best not in (None, state["best_epoch"]) \
            and previous_best not in kept_epochs(settings["epochs"], every):
        checkpoint_path(out, previous_best).unlink(missing_ok=True)
    if epoch == settings["epochs"]:
        (out / _RESUME).unlink(missing_ok=True)  # complete: nothing left to resume
        return
    obj = dict(epoch=epoch, state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
               optimizer=optimizer.state_dict(), best_epoch=state["best_epoch"],
               swa=None if swa is None else {k: v.detach().cpu() for k, v in swa.state_dict().items()}, **best)
    atomic_write(out / _RESUME, lambda tmp: torch.save(obj, tmp))


def train(model: nn.Module, data, *, method: str = "pgd_at", eps: float = 0.1, steps: int = 7,
          step_size: float | None = None, norm: str = "linf", lam: float | None = None, lam_warmup: int = 0,
          top: float = 0.1, grad_norm: str = "l1", clean_weight: float = 1.0, excess_weight: float = 1.0,
          random_start: bool = True, pgd_start: str | None = None, clean_first: bool = False,
          awp_gamma: float | None = None, cure_h: float | None = None, llr_mu: float | None = None,
          augment: str = "none", crop_pad: int = 4,
          epochs: int = 150, lr: float = 0.1, lr_milestones: Sequence[float] = (0.5, 0.75),
          momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 64, drop_last: bool = False,
          swa_start: int | None = None, swa_every: int | None = None, label_noise: float = 0.0, seed: int = 0,
          out_dir: str | os.PathLike = "run", eval_every: int = 1, eval_n: int | None = None,
          eval_steps: int = 10, small_eps: float | None = None, save_every: int | None = None,
          resume: bool = True, arch: str | None = None, arch_kwargs: Mapping | None = None,
          dataset: str | None = None, normalize: str | None = None, progress: bool = True,
          on_epoch=None) -> pd.DataFrame:
    """Train ``model`` in place and write a run directory that the trajectory analysis reads.

    Args:
        model: classifier mapping (B, ...) inputs in [0,1] to (B, K) logits (e.g. ``seeded_model("mlp",
            seed)``); trained in place on its own device.
        data: ``((x_train, y_train), (x_test, y_test))``, x (N, ...) in [0,1], y (N,) integer labels; or a
            dataset name / ``"file.py:fn"`` (``landscape.datasets``; both splits read); or ``(train, test)`` torch
            Datasets. Training holds both splits in memory.
        method: one of :data:`METHODS` (:mod:`landscape.objectives`). Default ``pgd_at``.
        eps: radius in [0,1] pixel units, for training attacks and evaluation. Default 0.1.
        steps: PGD steps for training attacks. Default 7.
        step_size: PGD step for training; default ``2.5·eps/steps``.
        norm: threat model of training and evaluation attacks, ``"linf"`` or ``"l2"``. Default ``"linf"``.
        lam: regularisation weight; default ``DEFAULT_LAM[method]`` (0.3 for AdvLC, 0.1 for the gradient
            penalties).
        lam_warmup: epochs of linear ramp ``lam · min(1, epoch / lam_warmup)``; ``lam_warmup=epochs`` is the
            official ``--reg_warmup``. Default 0 (none).
        top: AdvLC fraction of |Δlogit| entries kept. Default 0.1.
        grad_norm: input-gradient penalty ``"l1"`` (‖g‖₁) or ``"l2sq"`` (‖g‖₂²). Default ``"l1"``.
        clean_weight, excess_weight: weights of the clean term and of the adversarial excess in
            ``at_decomposed``. Default 1, 1 (= PGD-AT).
        random_start: PGD starts from a random point of the eps ball. Default True. Used when ``pgd_start``
            is None.
        pgd_start: start of the training PGD (PGD-family methods): ``"clean"`` (x), ``"random"`` or
            ``"grad"`` (x + ∇ₓ batch-mean CE: what the official AT/AdvLC loop actually does, see
            :mod:`landscape.objectives.adversarial`). Default None (``random_start`` decides).
        awp_gamma, cure_h, llr_mu: AWP's relative weight perturbation γ, CURE's finite-difference step h
            ([0,1] units) and LLR's μ; None: the published defaults (``DEFAULT_PARAMS`` of
            :mod:`landscape.objectives`; 5e-3, 1.5/255, 3). Recorded only for the methods that use them.
        clean_first: run the clean forward pass before the attack (official order). Default False.
        augment: ``"none"``, ``"crop"`` or ``"crop_flip"`` (:mod:`landscape.augmentation`), with
            ``crop_pad`` pixels of padding. Default ``"none"``; official CIFAR: ``"crop_flip"``, 4.
        epochs: number of epochs. Default 150.
        lr, lr_milestones, momentum, weight_decay: SGD with rate ×0.1 after each milestone fraction of
            ``epochs`` (see :func:`lr_at`). Defaults 0.1, (0.5, 0.75), 0.9, 5e-4.
        batch_size: training batch size. Default 64. drop_last: skip the last partial batch (official).
        swa_start, swa_every: stochastic weight averaging (``torch.optim.swa_utils``, equal weights) from
            epoch ``swa_start`` on, after every ``swa_every``-th batch of an epoch (None: its last batch);
            the average is evaluated every epoch (``test_swa`` rows) and saved as ``model_swa.pt``.
            Default None (no SWA).
        label_noise: fraction of training labels flipped to another class (symmetric, seeded by ``seed``;
            the test split is never changed). Default 0.
        seed: seeds label noise, shuffling, augmentation, PGD starts and the evaluation subset (not the
            initial weights: build the model with :func:`seeded_model`).
        out_dir: run directory; created when missing.
        eval_every: evaluate clean/PGD accuracy every this many epochs (and at the last). Default 1.
        eval_n: evaluate on a fixed random subset of this many samples per split (default: all).
        eval_steps: PGD steps of the evaluation attack (step ``2.5·eps/eval_steps``). Default 10.
        small_eps: a second evaluation radius, test split only (columns ``acc_adv_small``,
            ``loss_adv_small``; NaN in the train rows): robust
            overfitting of standard training shows at radii far below the AT one. Default None.
        save_every: keep ``model_eNNN.pt`` for every epoch (None) or for epoch 1, every k-th, the last and
            the best so far (by test PGD accuracy, latest epoch on ties, as the official code).
        resume: continue a run in ``out_dir`` whose settings match. With ``resume=False`` an ``out_dir`` that
            holds a run is an error.
        arch, arch_kwargs, dataset, normalize: recorded in ``settings.json`` so the checkpoints can be
            reloaded (``normalize``: the dataset whose mean/std the model is wrapped with, if any).
        progress: show a tqdm bar over epochs.
        on_epoch: called as ``on_epoch(epoch, model, optimizer)`` after each epoch is trained, evaluated and
            saved (e.g. ``landscape.monitor.Monitor.callback``); it must not change the model or the RNGs.

    Returns:
        The contents of ``metrics.csv``: one row per evaluated epoch and split with columns
        ``METRIC_COLUMNS`` (+ ``SMALL_EPS_COLUMNS`` with ``small_eps``) — ``epoch`` (1-based), ``split``
        (``train``/``test``/``test_swa``), ``acc_clean``, ``acc_adv`` (fractions; the train split is scored
        against the labels trained on, i.e. noisy labels when ``label_noise > 0``), ``loss_clean``,
        ``loss_adv`` (mean CE), ``lr`` (that epoch's rate), ``time_s`` (seconds spent on that epoch).

    Files in ``out_dir``: see the module docstring. Each ``model_eNNN.pt`` is the official AdvLC dict
    ``{'epoch', 'state_dict', 'best_acc1', 'best_pgd', 'best_fgsm', 'optimizer'}`` with ``optimizer`` None
    (``best_acc1``/``best_pgd``: the best clean/PGD test accuracies so far, in percent, as in the official
    code; ``best_fgsm`` None, no FGSM evaluation is run).

    Raises:
        ValueError / TypeError: bad hyper-parameters or data (naming the value and allowed ones).
        LandscapeError: ``out_dir`` holds a different run, or training diverged.
    """
    method = str(getattr(method, "value", method))
    settings = dict(
        method=method, eps=eps, steps=steps, step_size=step_size, norm=str(getattr(norm, "value", norm)),
        lam=DEFAULT_LAM.get(method, 0.0) if lam is None else lam, lam_warmup=lam_warmup, top=top,
        grad_norm=grad_norm, clean_weight=clean_weight, excess_weight=excess_weight, random_start=random_start,
        pgd_start=pgd_start, clean_first=clean_first,
        **method_params(method, awp_gamma=awp_gamma, cure_h=cure_h, llr_mu=llr_mu), augment=augment, crop_pad=crop_pad, epochs=epochs, lr=lr,
        lr_milestones=list(lr_milestones), momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
        drop_last=drop_last, swa_start=swa_start, swa_every=swa_every, label_noise=label_noise, seed=seed,
        eval_every=eval_every, eval_n=eval_n, eval_steps=eval_steps, small_eps=small_eps, save_every=save_every,
    )
    check_settings(settings)
    if settings["step_size"] is None:
        settings["step_size"] = 2.5 * eps / steps
    settings = {k: float(v) if isinstance(v, float) else v for k, v in settings.items()}
    if isinstance(data, str) and dataset is None:
        dataset = data
    data = _splits(data)
    num_classes = _num_classes(model, data)
    (x_tr, y_tr), (x_te, y_te) = prepare_data(data, label_noise=label_noise, num_classes=num_classes, seed=seed)
    if augment != "none" and x_tr.dim() != 4:
        raise ValueError(f"augment={augment!r} needs (N, C, H, W) images, got shape {tuple(x_tr.shape)}")
    y_clean = check_batch(data[0][0], data[0][1], name="x_train")[1]
    settings.update(arch=arch, arch_kwargs=_jsonable(dict(arch_kwargs or {})), dataset=dataset,
                    normalize=normalize,
                    num_classes=num_classes, n_train=int(x_tr.shape[0]), n_test=int(x_te.shape[0]),
                    n_flipped=int((y_tr != y_clean).sum()), landscape_version=__version__)
    device = model_device(model)
    dtype = model_dtype(model)
    x_tr, y_tr = x_tr.to(device, dtype), y_tr.to(device)
    x_te, y_te = x_te.to(device, dtype), y_te.to(device)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = _metric_columns(settings)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    swa = None
    if swa_start is not None:
        from torch.optim.swa_utils import AveragedModel

        swa = AveragedModel(model)
    loaded = _load_state(out, settings, resume)
    state = dict(best_acc1=0.0, best_pgd=0.0, best_epoch=None)  # best_fgsm stays None: no FGSM evaluation
    start, rows = 0, []
    if loaded is not None:
        start = int(loaded["epoch"])
        model.load_state_dict(loaded["state_dict"])
        if loaded.get("optimizer") is not None:
            optimizer.load_state_dict(loaded["optimizer"])
        if swa is not None and loaded.get("swa") is not None:
            swa.load_state_dict(loaded["swa"])
        state.update({k: float(loaded.get(k) or 0.0) for k in ("best_acc1", "best_pgd")})
        if (out / run_file("metrics")).exists():
            old = pd.read_csv(out / run_file("metrics"))
            rows = old[old["epoch"] <= start][columns].to_dict("records")
        state["best_epoch"] = loaded.get("best_epoch") or _best_epoch(rows)
    _write_settings(out, settings)

    eval_tr = _eval_subset(x_tr.shape[0], eval_n, seed).to(device)
    eval_te = _eval_subset(x_te.shape[0], eval_n, seed).to(device)
    from ._progress import tqdm  # quiet off a terminal

    bar = tqdm(range(start + 1, epochs + 1), desc=f"{settings['method']} s{seed}", unit="ep",
               disable=not progress, leave=False, initial=start, total=epochs)
    try:
        with set_mode(model, True):  # the caller's modes come back whatever happens
            for epoch in bar:
                previous_best = state["best_epoch"]
                rows += _run_epoch(model, optimizer, (x_tr, y_tr), (x_te[eval_te], y_te[eval_te]), eval_tr,
                                   epoch=epoch, settings=settings, state=state, bar=bar, swa=swa)
                _write_metrics(out, rows, columns)
                _save_epoch(out, model, optimizer, swa, epoch=epoch, settings=settings, state=state,
                            previous_best=previous_best)
                if on_epoch is not None:
                    on_epoch(epoch, model, optimizer)
    finally:
        bar.close()
        optimizer.zero_grad(set_to_none=True)
    return _write_metrics(out, rows, columns)


def _best_epoch(rows: list[dict]) -> int | None:
    """Epoch of the highest test PGD accuracy among metrics rows (latest on ties), None without rows."""
    test = [(r["acc_adv"], r["epoch"]) for r in rows if r["split"] == "test"]
    return int(max(test)[1]) if test else None


def _splits(data):
    """``((x_train, y_train), (x_test, y_test))`` tensors from those tensors, a dataset name or ``file.py:fn``
    (both splits read), or a pair ``(train, test)`` of torch Datasets (decoded into memory)."""
    if isinstance(data, str):
        return load_dataset(data, "train"), load_dataset(data, "test")
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Dataset) for d in data):
        return as_tensors(data[0]), as_tensors(data[1])
    return data


def _num_classes(model: nn.Module, data) -> int:
    """K, read from the model's output on one training sample."""
    try:
        x = data[0][0][:1]
    except (TypeError, IndexError, KeyError):
        raise TypeError("data must be ((x_train, y_train), (x_test, y_test))") from None
    x, _ = check_batch(x, name="x_train", dtype=model_dtype(model))
    with torch.no_grad(), eval_mode(model):
        logits = model(x.to(model_device(model)))
    if logits.dim() != 2:
        raise ValueError(f"model must return (B, K) logits, got shape {tuple(logits.shape)}")
    return int(logits.shape[1])


def _jsonable(obj):
    """Tuples -> lists recursively so settings compare equal after a JSON round trip."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
