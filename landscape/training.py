"""Training loops that produce per-epoch checkpoints for the trajectory analysis.

Four methods, selected by ``method``:

* ``standard``   — ``CE(f(x), y)``;
* ``pgd_at``     — ``CE(f(x_adv), y)``, PGD adversarial training (Madry et al. 2018);
* ``at_advlc``   — ``CE(f(x_adv), y) + lam · advlc(f(x), f(x_adv))`` (Li & Spratling 2023);
* ``at_gradreg`` — ``CE(f(x_adv), y) + lam · mean_i ‖∇ₓ CE(f(x_i), y_i)‖`` (input-gradient regularisation).

``x_adv`` comes from :func:`landscape.attacks.pgd` with ``train_mode=True`` (the model attacked in training
mode, as in the official AT/AdvLC loops). SGD with momentum, step learning-rate decay (×0.1 at fractions of
the run), weight decay. Every epoch writes ``model_e{epoch:03d}.pt`` in the official AdvLC checkpoint dict
format, plus ``metrics.csv`` and ``settings.json``; an interrupted run resumes from its last checkpoint and
ends with the same weights as an uninterrupted one.

Determinism: all randomness (shuffling, PGD random starts, any dropout) is derived from ``(seed, epoch,
batch)``, so the state to resume is the model, the optimizer and the epoch number. The caller's global RNG
state is left untouched.
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

from ._base import LandscapeError, check_batch, derive_seed, eval_mode, model_device, model_dtype, set_mode
from .runs import run_file
from ._io import atomic_write, atomic_write_text
from .regularizers import GRADIENT_NORMS, advlc, input_gradient_penalty

__all__ = ["METHODS", "DEFAULT_LAM", "METRIC_COLUMNS", "train", "evaluate", "seeded_model", "lr_at",
           "lam_at", "prepare_data", "checkpoint_path", "list_checkpoints"]

METHODS = ("standard", "pgd_at", "at_advlc", "at_gradreg")
#: regularisation weight used when ``lam=None``.
DEFAULT_LAM = {"standard": 0.0, "pgd_at": 0.0, "at_advlc": 0.3, "at_gradreg": 0.1}
#: columns of ``metrics.csv`` (long format: one row per evaluated epoch and split).
METRIC_COLUMNS = ["epoch", "split", "acc_clean", "acc_adv", "loss_clean", "loss_adv", "lr", "time_s"]

_CKPT_RE = re.compile(r"^model_e(\d+)\.pt$")
# Settings that may differ between an interrupted run and its resumption.
_RESUME_FREE = {"landscape_version", "progress"}


# ----------------------------------------------------------------------------------------------- helpers
# Streams of randomness, each seeded by derive_seed(seed, STREAM, ...) so that no two uses share a seed.
_SHUFFLE, _TORCH_RNG, _TRAIN_ATTACK, _EVAL_SUBSET, _EVAL_ATTACK = range(5)


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
            (symmetric noise, :func:`landscape.data.add_label_noise`, seeded by ``seed``). Test labels are
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
        from .data import add_label_noise

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
def _objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str, eps: float, steps: int,
               step_size: float, lam: float, top: float, grad_norm: str, seed: int,
               norm: str = "linf") -> torch.Tensor:
    """The training loss of one batch (model in training mode): () scalar with a graph to the parameters."""
    if method == "standard":
        return F.cross_entropy(model(x), y)
    from .attacks import pgd

    x_adv, _ = pgd(model, x, y, eps, steps=steps, step_size=step_size, norm=norm, random_start=True,
                   seed=seed, train_mode=True)
    logits_adv = model(x_adv)
    loss = F.cross_entropy(logits_adv, y)
    if method == "at_advlc" and lam > 0:
        loss = loss + lam * advlc(model(x), logits_adv, top=top)
    elif method == "at_gradreg" and lam > 0:
        loss = loss + lam * input_gradient_penalty(model, x, y, norm=grad_norm)
    return loss


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                 epoch: int, settings: Mapping) -> float:
    """One pass over (x, y) in a seeded random order; returns the mean training objective."""
    seed = settings["seed"]
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(derive_seed(seed, _SHUFFLE, epoch)))
    order = order.to(x.device)
    bs = settings["batch_size"]
    lam = lam_at(epoch, lam=settings["lam"], warmup=settings["lam_warmup"])
    total, count = 0.0, 0
    model.train()
    with torch.random.fork_rng(devices=[]):  # dropout etc. seeded per epoch; caller's RNG untouched
        torch.manual_seed(derive_seed(seed, _TORCH_RNG, epoch))
        for b, start in enumerate(range(0, x.shape[0], bs)):
            idx = order[start:start + bs]
            xb, yb = x[idx], y[idx]
            loss = _objective(model, xb, yb, method=settings["method"], eps=settings["eps"],
                              steps=settings["steps"], step_size=settings["step_size"], lam=lam,
                              top=settings["top"], grad_norm=settings["grad_norm"],
                              seed=derive_seed(seed, _TRAIN_ATTACK, epoch, b), norm=settings["norm"])
            value = float(loss.detach())
            if not math.isfinite(value):
                raise LandscapeError(f"training diverged at epoch {epoch} (loss {value}); "
                                     "try a smaller lr or lam")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += value * xb.shape[0]
            count += xb.shape[0]
    return total / count


def _run_epoch(model, optimizer, train_split, test_eval, eval_tr, *, epoch: int, settings: Mapping,
               best: dict, bar) -> list[dict]:
    """Train one epoch, evaluate when due (updating ``best`` in place); return the new metrics rows."""
    t0 = time.perf_counter()
    rate = lr_at(epoch, lr=settings["lr"], epochs=settings["epochs"], milestones=settings["lr_milestones"])
    for group in optimizer.param_groups:
        group["lr"] = rate
    x_tr, y_tr = train_split
    _train_epoch(model, optimizer, x_tr, y_tr, epoch=epoch, settings=settings)
    if epoch % settings["eval_every"] and epoch != settings["epochs"]:
        return []
    results = {split: evaluate(model, xs, ys, eps=settings["eps"], steps=settings["eval_steps"],
                               norm=settings["norm"], seed=settings["seed"])
               for split, (xs, ys) in (("train", (x_tr[eval_tr], y_tr[eval_tr])), ("test", test_eval))}
    elapsed = time.perf_counter() - t0
    best["best_acc1"] = max(best["best_acc1"], 100 * results["test"]["acc_clean"])
    best["best_pgd"] = max(best["best_pgd"], 100 * results["test"]["acc_adv"])
    bar.set_postfix(test_adv=f"{results['test']['acc_adv']:.3f}", train_adv=f"{results['train']['acc_adv']:.3f}")
    return [dict(epoch=epoch, split=split, **r, lr=rate, time_s=elapsed) for split, r in results.items()]


def _eval_subset(n: int, eval_n: int | None, seed: int) -> torch.Tensor:
    """Fixed random subset of ``eval_n`` of ``n`` indices (all of them when ``eval_n`` is None)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, _EVAL_SUBSET)))
    return perm if eval_n is None or eval_n >= n else perm[:eval_n].sort().values


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_metrics(path: Path, rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    return df


def _check_settings(s: dict) -> None:
    """Validate the hyper-parameters at the public boundary (ValueError/TypeError naming the value)."""
    if s["method"] not in METHODS:
        raise ValueError(f"unknown method {s['method']!r} (allowed: {', '.join(METHODS)})")
    if s["norm"] not in ("linf", "l2"):
        raise ValueError(f"unknown norm {s['norm']!r} (allowed: linf, l2)")
    if s["grad_norm"] not in GRADIENT_NORMS:
        raise ValueError(f"unknown grad_norm {s['grad_norm']!r} (allowed: {', '.join(GRADIENT_NORMS)})")
    for key in ("epochs", "steps", "batch_size", "eval_every", "eval_steps"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{key} must be an int, got {type(v).__name__}")
        if v < 1:
            raise ValueError(f"{key} must be >= 1, got {v}")
    if s["eval_n"] is not None and (isinstance(s["eval_n"], bool) or not isinstance(s["eval_n"], int)
                                    or s["eval_n"] < 1):
        raise ValueError(f"eval_n must be a positive int or None, got {s['eval_n']!r}")
    if isinstance(s["lam_warmup"], bool) or not isinstance(s["lam_warmup"], int) or s["lam_warmup"] < 0:
        raise ValueError(f"lam_warmup must be an int >= 0 (epochs), got {s['lam_warmup']!r}")
    for key in ("eps", "lam", "lr", "momentum", "weight_decay", "label_noise", "top"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{key} must be a number, got {type(v).__name__}")
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{key} must be a finite number >= 0, got {v}")
    if s["step_size"] is not None and (isinstance(s["step_size"], bool)
                                       or not isinstance(s["step_size"], (int, float))
                                       or not (math.isfinite(s["step_size"]) and s["step_size"] > 0)):
        raise ValueError(f"step_size must be a finite number > 0 or None, got {s['step_size']!r}")
    if s["lr"] <= 0:
        raise ValueError(f"lr must be > 0, got {s['lr']}")
    if s["label_noise"] >= 1:
        raise ValueError(f"label_noise must be a fraction in [0, 1), got {s['label_noise']}")
    if not 0 < s["top"] <= 1:
        raise ValueError(f"top must be a fraction in (0, 1], got {s['top']}")
    if s["method"] != "standard" and s["eps"] <= 0:
        raise ValueError(f"method {s['method']!r} needs eps > 0, got {s['eps']}")
    ms = s["lr_milestones"]
    if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in ms) \
            or list(ms) != sorted(ms):
        raise ValueError(f"lr_milestones must be increasing fractions in (0, 1], got {list(ms)}")


def _resume_point(out: Path, settings: dict, resume: bool) -> tuple[int, Path | None]:
    """(last completed epoch, its checkpoint) of a run already in ``out`` whose settings match; else (0, None)."""
    ckpts = list_checkpoints(out)
    if not ckpts:
        return 0, None
    if not resume:
        raise LandscapeError(f"{out} already holds checkpoints (model_e{ckpts[-1][0]:03d}.pt); "
                             "pass resume=True to continue that run or choose another out_dir")
    path = out / run_file("settings")
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        raise LandscapeError(f"cannot resume in {out}: settings.json is missing or unreadable") from None
    diff = sorted(k for k in (set(old) | set(settings)) - _RESUME_FREE if old.get(k) != settings.get(k))
    if diff:
        show = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in diff[:4])
        raise LandscapeError(f"cannot resume in {out}: settings differ ({show}); use another out_dir")
    return ckpts[-1]


def train(model: nn.Module, data, *, method: str = "pgd_at", eps: float = 0.1, steps: int = 7,
          step_size: float | None = None, norm: str = "linf", lam: float | None = None, lam_warmup: int = 0,
          top: float = 0.1, grad_norm: str = "l1", epochs: int = 150, lr: float = 0.1,
          lr_milestones: Sequence[float] = (0.5, 0.75), momentum: float = 0.9, weight_decay: float = 5e-4,
          batch_size: int = 64, label_noise: float = 0.0, seed: int = 0, out_dir: str | os.PathLike = "run",
          eval_every: int = 1, eval_n: int | None = None, eval_steps: int = 10, resume: bool = True,
          arch: str | None = None, arch_kwargs: Mapping | None = None, dataset: str | None = None,
          normalize: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Train ``model`` in place and write a run directory that the trajectory analysis reads.

    Args:
        model: classifier mapping (B, ...) inputs in [0,1] to (B, K) logits (e.g. ``seeded_model("mlp",
            seed)``); trained in place on its own device.
        data: ``((x_train, y_train), (x_test, y_test))``, x (N, ...) in [0,1], y (N,) integer labels.
        method: ``standard`` | ``pgd_at`` | ``at_advlc`` | ``at_gradreg``. Default ``pgd_at``.
        eps: L∞ radius in [0,1] pixel units, for training attacks and evaluation. Default 0.1.
        steps: PGD steps for training attacks (random start). Default 7.
        step_size: PGD step for training; default ``2.5·eps/steps``.
        norm: threat model of training and evaluation attacks, ``"linf"`` or ``"l2"``. Default ``"linf"``.
        lam: regularisation weight; default ``DEFAULT_LAM[method]`` (0.3 for AdvLC, 0.1 for gradreg).
        lam_warmup: epochs of linear ramp of ``lam`` from ``lam/lam_warmup`` to ``lam``. Default 0 (none).
        top: AdvLC fraction of |Δlogit| entries kept. Default 0.1.
        grad_norm: input-gradient penalty ``"l1"`` (‖g‖₁) or ``"l2sq"`` (‖g‖₂²). Default ``"l1"``.
        epochs: number of epochs. Default 150.
        lr, lr_milestones, momentum, weight_decay: SGD with rate ×0.1 after each milestone fraction of
            ``epochs`` (see :func:`lr_at`). Defaults 0.1, (0.5, 0.75), 0.9, 5e-4.
        batch_size: training batch size. Default 64.
        label_noise: fraction of training labels flipped to another class (symmetric, seeded by ``seed``;
            the test split is never changed). Default 0.
        seed: seeds label noise, shuffling, PGD starts and the evaluation subset (not the initial weights:
            build the model with :func:`seeded_model`).
        out_dir: run directory; created when missing.
        eval_every: evaluate clean/PGD accuracy every this many epochs (and at the last). Default 1.
        eval_n: evaluate on a fixed random subset of this many samples per split (default: all).
        eval_steps: PGD steps of the evaluation attack (step ``2.5·eps/eval_steps``). Default 10.
        resume: continue from the last ``model_eNNN.pt`` in ``out_dir`` when its settings match. With
            ``resume=False`` an ``out_dir`` that holds checkpoints is an error.
        arch, arch_kwargs, dataset, normalize: recorded in ``settings.json`` so the checkpoints can be
            reloaded (``normalize``: the dataset whose mean/std the model is wrapped with, if any).
        progress: show a tqdm bar over epochs.

    Returns:
        The contents of ``metrics.csv``: one row per evaluated epoch and split with columns
        ``METRIC_COLUMNS`` — ``epoch`` (1-based), ``split`` (``train``/``test``), ``acc_clean``,
        ``acc_adv`` (fractions; the train split is scored against the labels trained on, i.e. noisy
        labels when ``label_noise > 0``), ``loss_clean``, ``loss_adv`` (mean CE), ``lr`` (that epoch's
        rate), ``time_s`` (seconds spent on that epoch, training + evaluation).

    Files in ``out_dir``:
        ``model_e{epoch:03d}.pt`` every epoch, the official AdvLC dict ``{'epoch', 'state_dict',
        'best_acc1', 'best_pgd', 'best_fgsm', 'optimizer'}`` (``best_acc1``/``best_pgd``: the best clean/PGD
        test accuracies so far, in percent, as in the official code; ``best_fgsm`` is None, no FGSM
        evaluation is run); ``metrics.csv``; ``settings.json``.

    Raises:
        ValueError / TypeError: bad hyper-parameters or data (naming the value and allowed ones).
        LandscapeError: ``out_dir`` holds a different run, or training diverged.
    """
    from .checkpoints import load_checkpoint, save_checkpoint

    settings = dict(
        method=str(getattr(method, "value", method)), eps=eps, steps=steps, step_size=step_size,
        norm=str(getattr(norm, "value", norm)),
        lam=DEFAULT_LAM.get(str(method), 0.0) if lam is None else lam, lam_warmup=lam_warmup, top=top,
        grad_norm=grad_norm, epochs=epochs, lr=lr, lr_milestones=list(lr_milestones), momentum=momentum,
        weight_decay=weight_decay, batch_size=batch_size, label_noise=label_noise, seed=seed,
        eval_every=eval_every, eval_n=eval_n, eval_steps=eval_steps,
    )
    _check_settings(settings)
    if settings["step_size"] is None:
        settings["step_size"] = 2.5 * eps / steps
    settings = {k: float(v) if isinstance(v, float) else v for k, v in settings.items()}
    num_classes = _num_classes(model, data)
    (x_tr, y_tr), (x_te, y_te) = prepare_data(data, label_noise=label_noise, num_classes=num_classes, seed=seed)
    y_clean = check_batch(data[0][0], data[0][1], name="x_train")[1]
    from . import __version__

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
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    start, ckpt_path = _resume_point(out, settings, resume)
    best = dict(best_acc1=0.0, best_pgd=0.0)  # best_fgsm stays None: no FGSM evaluation
    rows: list[dict] = []
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt.state_dict)
        optimizer.load_state_dict(_optimizer_state(ckpt_path))
        best.update({k: float(ckpt.meta.get(k) or 0.0) for k in best})
        if (out / run_file("metrics")).exists():
            old = pd.read_csv(out / run_file("metrics"))
            rows = old[old["epoch"] <= start][METRIC_COLUMNS].to_dict("records")
    _write_json(out / run_file("settings"), settings)

    eval_tr = _eval_subset(x_tr.shape[0], eval_n, seed).to(device)
    eval_te = _eval_subset(x_te.shape[0], eval_n, seed).to(device)
    from tqdm.auto import tqdm

    bar = tqdm(range(start + 1, epochs + 1), desc=f"{settings['method']} s{seed}", unit="ep",
               disable=not progress, leave=False, initial=start, total=epochs)
    try:
        with set_mode(model, True):  # the caller's modes come back whatever happens
            for epoch in bar:
                rows += _run_epoch(model, optimizer, (x_tr, y_tr), (x_te[eval_te], y_te[eval_te]), eval_tr,
                                   epoch=epoch, settings=settings, best=best, bar=bar)
                _write_metrics(out / run_file("metrics"), rows)
                save_checkpoint(checkpoint_path(out, epoch), model, epoch=epoch,
                                optimizer=optimizer.state_dict(), **best)
    finally:
        bar.close()
        optimizer.zero_grad(set_to_none=True)
    return _write_metrics(out / run_file("metrics"), rows)


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


def _optimizer_state(path: Path) -> dict:
    """The ``optimizer`` entry of a checkpoint written by :func:`train` (safe ``weights_only`` load)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user-facing resume error
        raise LandscapeError(f"cannot resume from {path}: {exc}".splitlines()[0]) from None
    state = raw.get("optimizer") if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise LandscapeError(f"cannot resume from {path}: it holds no optimizer state")
    return state


def _jsonable(obj):
    """Tuples -> lists recursively so settings compare equal after a JSON round trip."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
