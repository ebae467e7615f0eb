"""Robust accuracy as the paper reports it: clean, FGSM, PGD-10 (official settings) and AutoAttack.

* :func:`pgd_correct` — per-sample correctness under PGD; the default attack is
  :meth:`AttackSettings.official <landscape.attacks.AttackSettings.official>` (PGD-10, step eps/4, no
  random start), the evaluation attack of Li & Spratling's code.
* :func:`autoattack_correct` — per-sample correctness under AutoAttack (Croce & Hein, ICML 2020), run
  through the ``pyautoattack`` package (the packaged official implementation): its ``AutoAttack`` class
  and ``run_standard_evaluation``, standard version = APGD-CE, APGD-T, FAB-T, Square. Nothing of the attack
  is re-implemented here.
* FGSM accuracy (one full eps step along the gradient sign) beside them, and with ``checks=True`` the
  sanity flags of :mod:`landscape.masking` (zero/NaN gradients, randomised outputs, probability outputs,
  Square beating the white-box attacks, the landscape signature of gradient masking).
* :func:`evaluate_model` — one row of accuracies for one model; :func:`evaluate_checkpoints` — one row per
  checkpoint; :func:`final_eval` — the best and last checkpoints of an analysed run, written to
  :data:`FINAL_EVAL_FILE` in the analysis folder.

All inputs are (N, ...) images in [0,1] with (N,) integer labels; ``eps`` is in [0,1] pixel units.
"""
from __future__ import annotations

import copy
import os
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ._base import check_model_batch, derive_seed, eval_mode, frozen_params, isolated_rng, model_device, model_dtype
from .attacks import AttackSettings, _check_eps, _check_norm, run_attack
from .datasets import open_dataset
from .masking import SQUARE_QUERIES, correct_finite, masking_checks
from .datasets.stream import batches
from .runs import Run, run_file

__all__ = ["EVAL_ATTACKS", "AUTOATTACK_VERSIONS", "FINAL_EVAL_FILE", "autoattack_correct", "pgd_correct",
           "evaluate_model", "evaluate_checkpoints", "final_eval"]

EVAL_ATTACKS = ("pgd", "autoattack")
"""``pgd``: clean + PGD accuracy; ``autoattack``: clean + PGD + AutoAttack accuracy."""
AUTOATTACK_VERSIONS = ("standard", "plus", "rand", "custom")
FINAL_EVAL_FILE = run_file("final_eval")
"""File written by :func:`final_eval` in the analysis folder (best and last checkpoint under each attack)."""
_STREAM_EVAL = 7  # random stream of the evaluation PGD (used only when random_start=True)
_AA_NORMS = {"linf": "Linf", "l2": "L2"}


def _check_attack(attack: str) -> str:
    if attack not in EVAL_ATTACKS:
        raise ValueError(f"unknown evaluation attack {attack!r} (allowed: {', '.join(EVAL_ATTACKS)})")
    return attack


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


def _predict_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) bool: argmax == label with finite logits, batched, no grad."""
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            out.append(correct_finite(model(x[start:start + batch_size]), y[start:start + batch_size]))
    return torch.cat(out)


def pgd_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, settings: AttackSettings | None = None,
                eps: float | None = None, batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """Per-sample correctness under a PGD (or FGSM) attack, in eval mode.

    Args:
        model: classifier returning (B, K) logits.
        x: (N, ...) inputs in [0,1]. y: (N,) labels.
        settings: the attack; default ``AttackSettings.official(eps)`` (PGD-10, step eps/4, no random start).
        eps: radius for the default settings (give ``settings`` or ``eps``).
        batch_size: samples per attack batch. Default 256.
        seed: seeds the random start, if the settings use one (per batch).

    Returns:
        (N,) bool tensor on x's device.
    """
    if settings is None:
        if eps is None:
            raise TypeError("pgd_correct needs settings= or eps=")
        settings = AttackSettings.official(eps)
    elif not isinstance(settings, AttackSettings):
        raise TypeError(f"settings must be an AttackSettings, got {type(settings).__name__}")
    batch_size = _check_batch_size(batch_size)
    x, y = check_model_batch(model, x, y, unit_box=True)
    out = []
    with eval_mode(model), frozen_params(model):
        for i, start in enumerate(range(0, x.shape[0], batch_size)):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            x_adv, _ = run_attack(model, xb, yb, settings, seed=derive_seed(seed, _STREAM_EVAL, i))
            out.append(_predict_correct(model, x_adv, yb, batch_size))
    return torch.cat(out)


def autoattack_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                       version: str = "standard", attacks: Sequence[str] | None = None, seed: int = 0,
                       batch_size: int = 250) -> torch.Tensor:
    """Per-sample correctness under AutoAttack, run by the ``pyautoattack`` package.

    ``pyautoattack.AutoAttack(model, eps=eps, norm=..., version=version, seed=seed)`` and its
    ``run_standard_evaluation`` produce the adversarial inputs; correctness is then read off the model's
    predictions on them (robust samples are returned unchanged by the package). The model is attacked in
    eval mode, in float32 (a float64 model is copied and cast, as the package works in float32), and its
    parameters get no ``.grad``; the global RNG, which the package seeds, is restored afterwards.

    Args:
        model: classifier returning (B, K) logits (K >= 10 for the standard version's 9 target classes).
        x: (N, ...) inputs in [0,1]. y: (N,) labels.
        eps: radius in [0,1] pixel units.
        norm: ``"linf"`` or ``"l2"``.
        version: ``"standard"`` (default: APGD-CE, APGD-T, FAB-T, Square), ``"plus"``, ``"rand"`` or
            ``"custom"`` (then ``attacks`` names the package's attacks to run, e.g. ``["apgd-ce"]``).
        attacks: only with ``version="custom"``.
        seed: the package's seed (it uses the time when None; we always pass one).
        batch_size: the package's batch size. Default 250.

    Returns:
        (N,) bool tensor on x's device.

    Raises:
        ImportError: ``pyautoattack`` is not installed (``pip install pyautoattack``).
    """
    eps = _check_eps(eps)
    norm = _check_norm(norm).value
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r} (allowed: {', '.join(AUTOATTACK_VERSIONS)})")
    if (attacks is not None) != (version == "custom"):
        raise ValueError("attacks= goes with version='custom' only (and version='custom' needs attacks=)")
    batch_size = _check_batch_size(batch_size)
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise ImportError("AutoAttack needs the pyautoattack package: pip install pyautoattack") from None
    x, y = check_model_batch(model, x, y, unit_box=True)
    work = model if model_dtype(model) == torch.float32 else copy.deepcopy(model).float()
    x32 = x.to(torch.float32)
    with eval_mode(work), frozen_params(work), isolated_rng(x32.device):  # the package seeds the global RNG
        adversary = AutoAttack(work, attacks=None if attacks is None else list(attacks), eps=eps,
                               norm=_AA_NORMS[norm], version=version, seed=int(seed), device=model_device(work))
        x_adv, _ = adversary.run_standard_evaluation(x32, y, batch_size=batch_size)
        return _predict_correct(work, x_adv.to(x32.device), y, batch_size)


_CHUNK = 4096  # samples decoded at a time when x is a Dataset: memory follows the chunk, not the dataset


def _chunks(x, y, batch_size: int):
    """``[(x, y)]`` for tensors; chunks of a Dataset, decoded as they are used."""
    if isinstance(x, Dataset):
        if y is not None:
            raise TypeError("y must be None when x is a Dataset (its items carry the labels)")
        ds = open_dataset(x)
        return batches(ds, max(batch_size, _CHUNK))
    return [(x, y)]


def evaluate_model(model: nn.Module, x: torch.Tensor | Dataset, y: torch.Tensor | None = None, *, attack: str = "pgd", eps: float,
                   norm: str = "linf", pgd: AttackSettings | None = None, version: str = "standard",
                   aa_attacks: Sequence[str] | None = None, batch_size: int = 256, seed: int = 0,
                   checks: bool = False, check_n: int = 200, square_n: int = 100,
                   square_queries: int = SQUARE_QUERIES) -> dict:
    """Clean, FGSM, PGD and (with ``attack="autoattack"``) AutoAttack accuracy of one model, and its sanity flags.

    Args:
        model: classifier. x: (N, ...) in [0,1], or a ``torch.utils.data.Dataset`` of (image, label) pairs
            (decoded 4096 samples at a time). y: (N,) labels; None for a Dataset.
        attack: ``"pgd"`` or ``"autoattack"`` (which also reports PGD).
        eps, norm: the threat model (eps in [0,1] pixel units).
        pgd: the PGD attack; default ``AttackSettings.official(eps, norm=norm)``.
        version, aa_attacks: AutoAttack version (default ``"standard"``) and, for ``"custom"``, its attacks.
        batch_size, seed: batching and seeds.
        checks: also compute the sanity flags (:func:`landscape.masking.masking_checks`) on the first
            ``check_n`` samples (default 200), Square on the first ``square_n`` (default 100, 0 skips it)
            with ``square_queries`` queries each (default 1000). Default False.

    Returns:
        ``{"n", "acc_clean", "acc_fgsm", "acc_pgd", ["acc_autoattack"], "eps", "norm", "pgd_steps",
        "pgd_step_size", "pgd_random_start", ["autoattack_version"], "seed"}`` (accuracies as fractions in
        [0, 1]), and with ``checks`` the columns of :func:`landscape.masking.masking_checks` (``flag_*``,
        their numbers, ``flagged``).
    """
    _check_attack(attack)
    eps = _check_eps(eps)
    norm = _check_norm(norm).value
    pgd = AttackSettings.official(eps, norm=norm) if pgd is None else pgd
    if not isinstance(pgd, AttackSettings):
        raise TypeError(f"pgd must be an AttackSettings, got {type(pgd).__name__}")
    for name, value in (("check_n", check_n), ("square_n", square_n), ("square_queries", square_queries)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "square_n" else 1):
            raise ValueError(f"{name} must be an integer >= {0 if name == 'square_n' else 1}, got {value!r}")
    if pgd.eps != eps or pgd.norm != norm:
        raise ValueError(f"the PGD settings (eps={pgd.eps:g}, {pgd.norm}) differ from eps={eps:g}, norm={norm}")
    fgsm = AttackSettings("fgsm", eps, norm=norm)
    counts = {"n": 0, "acc_clean": 0, "acc_fgsm": 0, "acc_pgd": 0, "acc_autoattack": 0}
    flags = None
    for xc, yc in _chunks(x, y, batch_size):
        xc, yc = check_model_batch(model, xc, yc, unit_box=True)
        xc, yc = xc.to(model_device(model)), yc.to(model_device(model))
        if checks and flags is None:
            flags = masking_checks(model, xc[:check_n], yc[:check_n], eps=eps, norm=norm, pgd=pgd,
                                   square=square_n > 0, square_n=max(square_n, 1), square_queries=square_queries,
                                   seed=seed)
        with eval_mode(model):
            counts["acc_clean"] += int(_predict_correct(model, xc, yc, batch_size).sum())
        counts["acc_fgsm"] += int(pgd_correct(model, xc, yc, settings=fgsm, batch_size=batch_size, seed=seed).sum())
        counts["acc_pgd"] += int(pgd_correct(model, xc, yc, settings=pgd, batch_size=batch_size, seed=seed).sum())
        if attack == "autoattack":
            counts["acc_autoattack"] += int(autoattack_correct(model, xc, yc, eps=eps, norm=norm, version=version,
                                                               attacks=aa_attacks, seed=seed,
                                                               batch_size=batch_size).sum())
        counts["n"] += int(xc.shape[0])
    n = counts["n"]
    row = {"n": n, "acc_clean": counts["acc_clean"] / n, "acc_fgsm": counts["acc_fgsm"] / n,
           "acc_pgd": counts["acc_pgd"] / n}
    if attack == "autoattack":
        row["acc_autoattack"] = counts["acc_autoattack"] / n
    setting = pgd.to_dict()
    row.update({"eps": eps, "norm": norm, "pgd_steps": setting["steps"], "pgd_step_size": setting["step_size"],
                "pgd_random_start": setting["random_start"], "seed": int(seed)})
    if attack == "autoattack":
        row["autoattack_version"] = version if version != "custom" else "custom:" + "+".join(aa_attacks or ())
    if flags is not None:
        row.update(flags)
    return row


def evaluate_checkpoints(checkpoints: Sequence[str | os.PathLike], load: Callable[[str], tuple[nn.Module, int | None]],
                         x: torch.Tensor, y: torch.Tensor, *, progress: bool = False, **kwargs) -> pd.DataFrame:
    """One row per checkpoint: ``checkpoint, epoch`` and the columns of :func:`evaluate_model`.

    Args:
        checkpoints: checkpoint files.
        load: ``path -> (model, epoch or None)`` (e.g. the CLI's loader).
        x, y: the evaluation data.
        progress: tqdm bar over checkpoints.
        **kwargs: passed to :func:`evaluate_model` (``attack``, ``eps``, ``norm``, ...).
    """
    from ._progress import tqdm  # quiet off a terminal

    rows = []
    for path in tqdm(list(checkpoints), desc="evaluate", unit="ckpt", disable=not progress):
        model, epoch = load(str(path))
        if isinstance(x, torch.Tensor):
            xd, yd = x.to(model_device(model)), y.to(model_device(model))
        else:
            xd, yd = x, y
        rows.append({"checkpoint": str(path), "epoch": epoch, **evaluate_model(model, xd, yd, **kwargs)})
    table = pd.DataFrame(rows)
    table["epoch"] = table["epoch"].astype("Int64")
    return table


def final_eval(table: pd.DataFrame, out_dir: str | os.PathLike, load: Callable[[str], tuple[nn.Module, int | None]],
               x: torch.Tensor, y: torch.Tensor, *, log: pd.DataFrame | None = None,
               **kwargs) -> pd.DataFrame:
    """Evaluate the best and last checkpoints of an analysed run and write ``out_dir/final_eval.csv``.

    The best epoch is the run's one best epoch (:func:`landscape.diagnose.best_epoch`: the training log when
    given, else the trajectory table); its checkpoint is the one the trajectory table lists for that epoch.

    Args:
        table: the trajectory table (``epoch, split, acc_adv, checkpoint``).
        out_dir: the analysis folder (the trajectory's ``out_dir``).
        load: ``path -> (model, epoch or None)``.
        x, y: evaluation data (the test set).
        log: the training log (``metrics.csv``), see :func:`landscape.diagnose.read_training_log`.
        **kwargs: passed to :func:`evaluate_model` (``attack``, ``eps``, ``norm``, ...).

    Returns:
        The written table: one row per ``which`` in (``best``, ``last``) — a single ``best,last`` row when
        they coincide — with ``which, epoch, checkpoint, best_source``, the :func:`evaluate_model` columns
        and ``error`` (a checkpoint of that epoch missing from the table).
    """
    from .diagnose import best_epoch

    be = best_epoch(table, log=log)
    ok = table[table["error"].isna()] if "error" in table.columns else table
    wanted = {"best": be.epoch, "last": be.last_epoch}
    if be.epoch == be.last_epoch:
        wanted = {"best,last": be.epoch}
    rows = []
    for which, epoch in wanted.items():
        paths = ok.loc[pd.to_numeric(ok["epoch"], errors="coerce") == epoch, "checkpoint"].dropna().unique()
        head = {"which": which, "epoch": int(epoch), "best_source": be.source}
        if len(paths) == 0:
            rows.append({**head, "checkpoint": None, "error": f"no analysed checkpoint of epoch {epoch}"})
            continue
        one = evaluate_checkpoints([paths[0]], load, x, y, **kwargs).iloc[0].to_dict()
        one.pop("epoch", None)
        rows.append({**head, **one, "error": None})
    result = pd.DataFrame(rows)
    out = Run(out_dir).write("final_eval", result)
    result.attrs["path"] = str(out)
    return result
