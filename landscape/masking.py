"""Sanity flags for a robustness evaluation: signs that an accuracy under attack is not to be trusted.

A defence can look robust because the attacks cannot *find* adversarial inputs (gradient masking,
obfuscated gradients; Athalye et al., ICML 2018) rather than because there are none. AutoAttack (Croce &
Hein, ICML 2020; ``pyautoattack/checks.py``) warns about four such signs; this module computes them as
numbers with a flag each, and adds the toolkit's own landscape signature:

============================  ==========  =================================================================
flag (column)                 source      fires when
============================  ==========  =================================================================
``flag_zero_grad``            AutoAttack  more than :data:`ZERO_GRAD_FRACTION` of the samples have
                                          ‖∇ₓL‖₁ = 0 or a non-finite input gradient
``flag_randomised``           AutoAttack  repeated eval-mode forward passes of the same input differ
                                          (L2 distance of L2-normalised outputs > :data:`RANDOM_TOL`, or a
                                          changed prediction)
``flag_probabilities``        AutoAttack  every output row is a probability vector (>= 0, sums to 1) or a
                                          log-probability vector (logsumexp = 0), within :data:`PROB_TOL`
``flag_square``               AutoAttack  the black-box Square attack beats FGSM + PGD on the same samples
                                          by more than a paired noise margin (:func:`square_check`)
``flag_landscape``            landscape   the Taylor gap along the best random vertex of the eps ball is
                                          above :data:`TAYLOR_RATIO_MAX` × the loss increase PGD finds
============================  ==========  =================================================================

Each check is a function returning a plain dict of numbers and its flag; :func:`masking_checks` runs them
all on one batch; :func:`flag_table` turns a row into a long DataFrame with the explanations
(:data:`FLAGS`). Thresholds and their justification: ``docs/evaluation.md``.

All inputs are (N, ...) images in [0,1] with (N,) integer labels; ``eps`` is in [0,1] pixel units. Models
are checked in eval mode, parameters untouched (no ``.grad``), and the global RNG is left as it was.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ._base import check_model_batch, eval_mode, frozen_params, isolated_rng, model_dtype, per_sample_loss
from .attacks import AttackSettings, _check_eps, _check_norm, run_attack
from .measures import first_order_share, input_gradient, taylor_gap
from .measures.first_order import MIN_INCREASE

__all__ = ["FLAGS", "ZERO_GRAD_FRACTION", "RANDOM_TOL", "RANDOM_PASSES", "PROB_TOL", "SQUARE_MIN_GAP",
           "TAYLOR_RATIO_MAX", "SQUARE_QUERIES", "gradient_check", "randomness_check", "probability_check",
           "square_correct", "correct_finite", "square_check", "landscape_check", "masking_checks", "flag_table", "flag_lines"]

ZERO_GRAD_FRACTION = 0.01
"""Largest tolerated fraction of samples with a zero or non-finite input gradient (AutoAttack warns at any)."""
RANDOM_PASSES = 5
"""Forward passes compared by the randomness check (AutoAttack's ``check_randomized``: 5)."""
RANDOM_TOL = 1e-4
"""Largest L2 distance between L2-normalised outputs of two passes (AutoAttack's ``alpha``: 1e-4)."""
PROB_TOL = 1e-5
"""Tolerance of the probability check (AutoAttack's ``check_range_output`` ``alpha``: 1e-5)."""
SQUARE_MIN_GAP = 0.002
"""Smallest accuracy gap counted for Square beating the white-box attacks (AutoAttack's ``check_square_sr``)."""
SQUARE_QUERIES = 1000
"""Default query budget of the Square check (AutoAttack's standard run uses 5000)."""
TAYLOR_RATIO_MAX = 1.0
"""Largest tolerated ratio of the probe Taylor gap to PGD's loss increase (honest models: about 0.1)."""
PROBES = 8
"""Random vertices of the eps ball tried by the landscape check."""


@dataclasses.dataclass(frozen=True)
class Flag:
    """One sanity flag: its column, who defines it, the number it reads and a one-line explanation."""

    column: str
    source: str
    value: str
    threshold: str
    meaning: str


FLAGS: dict[str, Flag] = {
    "zero_grad": Flag("flag_zero_grad", "autoattack", "zero_grad_frac", f"> {ZERO_GRAD_FRACTION:g}",
                      "input gradients are zero or NaN: gradient attacks cannot move (e.g. quantised input)"),
    "randomised": Flag("flag_randomised", "autoattack", "rand_max_diff", f"> {RANDOM_TOL:g}",
                       "outputs change between eval-mode passes of one input: use an EOT/rand evaluation"),
    "probabilities": Flag("flag_probabilities", "autoattack", "prob_frac", "= 1",
                          "the model outputs (log-)probabilities, not logits: CE on them has vanishing gradients"),
    "square": Flag("flag_square", "autoattack", "square_gap", "> square_margin",
                   "black-box Square beats FGSM/PGD: the white-box attacks are blocked, not the adversary"),
    "landscape": Flag("flag_landscape", "landscape", "taylor_ratio", f"> {TAYLOR_RATIO_MAX:g}",
                      "the loss rises off the gradient's first-order prediction more than PGD can raise it"),
}
"""The flags by name, in report order."""


def _checked(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None):
    if y is None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        x, _ = check_model_batch(model, x, torch.zeros(x.shape[0], dtype=torch.long), unit_box=True)
        return x, None
    return check_model_batch(model, x, y, unit_box=True)


# ------------------------------------------------------------------------------------- AutoAttack's checks

def gradient_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                   max_fraction: float = ZERO_GRAD_FRACTION) -> dict:
    """Fraction of samples whose cross-entropy input gradient is zero or non-finite.

    AutoAttack's ``check_zero_gradients`` warns when any sample has ``‖∇ₓL‖₁ = 0``; here the fraction is
    returned and flagged above ``max_fraction`` (a sample whose loss saturates to exactly 0 in float32 has a
    zero gradient on an honest model too). A non-finite gradient counts as well.

    Args:
        model: classifier returning (B, K) outputs. x: (B, ...) in [0,1]. y: (B,) labels.
        max_fraction: flag threshold. Default :data:`ZERO_GRAD_FRACTION` (0.01).

    Returns:
        ``{"zero_grad_frac", "nan_grad_frac", "flag_zero_grad"}`` (fractions in [0, 1]).
    """
    x, y = _checked(model, x, y)
    with isolated_rng(x.device):
        grad = input_gradient(model, x, y).flatten(1)
    finite = torch.isfinite(grad).all(1)
    zero = finite & (grad.abs().sum(1) == 0)
    zero_frac, nan_frac = float(zero.double().mean()), float((~finite).double().mean())
    return {"zero_grad_frac": zero_frac, "nan_grad_frac": nan_frac,
            "flag_zero_grad": bool(zero_frac + nan_frac > max_fraction)}


def randomness_check(model: nn.Module, x: torch.Tensor, *, passes: int = RANDOM_PASSES, tol: float = RANDOM_TOL,
                     seed: int = 0) -> dict:
    """Do repeated eval-mode forward passes of the same input differ?

    As AutoAttack's ``check_randomized``: ``passes`` outputs are L2-normalised per row and compared pairwise;
    the flag fires when the largest row distance exceeds ``tol`` or a prediction changes. The global RNG
    is seeded with ``seed`` for the passes and restored afterwards.

    Returns:
        ``{"rand_max_diff", "rand_pred_changed", "flag_randomised"}``.
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 2:
        raise ValueError(f"passes must be an integer >= 2, got {passes!r}")
    x, _ = _checked(model, x, None)
    outs = []
    with eval_mode(model), frozen_params(model), torch.no_grad(), isolated_rng(x.device):
        torch.manual_seed(int(seed))
        for _ in range(passes):
            out = model(x).flatten(1).double()
            outs.append(out / (out.norm(dim=1, keepdim=True) + 1e-10))
    diff = max(float((a - b).norm(dim=1).max()) for i, a in enumerate(outs) for b in outs[i + 1:])
    changed = any(not torch.equal(o.argmax(1), outs[0].argmax(1)) for o in outs[1:])
    diff = diff if math.isfinite(diff) else math.inf
    return {"rand_max_diff": diff, "rand_pred_changed": bool(changed),
            "flag_randomised": bool(diff > tol or changed)}


def probability_check(model: nn.Module, x: torch.Tensor, *, tol: float = PROB_TOL) -> dict:
    """Are the outputs probabilities (or log-probabilities) rather than logits?

    A row counts as probabilities when all entries are >= ``-tol`` and it sums to 1 within ``tol``
    (AutoAttack's ``check_range_output``), as log-probabilities when its logsumexp is 0 within ``tol``
    (a ``log_softmax`` head, which the package does not check). The flag fires when *every* row is one or
    the other (as AutoAttack: a logit row can sum to 1 by chance, all rows cannot).

    Returns:
        ``{"prob_frac", "logprob_frac", "flag_probabilities"}``.
    """
    x, _ = _checked(model, x, None)
    with eval_mode(model), frozen_params(model), torch.no_grad(), isolated_rng(x.device):
        out = model(x).flatten(1).double()
    prob = (out.min(1).values >= -tol) & ((out.sum(1) - 1).abs() <= tol)
    logprob = out.logsumexp(1).abs() <= tol
    prob_frac, logprob_frac = float(prob.double().mean()), float(logprob.double().mean())
    return {"prob_frac": prob_frac, "logprob_frac": logprob_frac,
            "flag_probabilities": bool(bool(prob.all()) or bool(logprob.all()))}


def square_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                   n_queries: int = SQUARE_QUERIES, seed: int = 0) -> torch.Tensor:
    """Per-sample correctness under the Square attack (Andriushchenko et al., ECCV 2020), black-box.

    Runs ``pyautoattack.square.SquareAttack`` (the package's own implementation, margin loss, ``p_init=0.8``,
    one restart, as in AutoAttack's standard run) with ``n_queries`` queries per sample. The model is queried
    in eval mode and float32; the global RNG is restored afterwards (the package seeds it).

    Args:
        model: classifier. x: (N, C, H, W) in [0,1]. y: (N,) labels.
        eps, norm: threat model (``"linf"`` or ``"l2"``). n_queries: budget per sample. seed: the package's seed.

    Returns:
        (N,) bool tensor on x's device.
    """
    eps = _check_eps(eps)
    norm = _check_norm(norm).value
    if isinstance(n_queries, bool) or not isinstance(n_queries, int) or n_queries < 1:
        raise ValueError(f"n_queries must be an integer >= 1, got {n_queries!r}")
    x, y = check_model_batch(model, x, y, unit_box=True)
    if x.dim() != 4:
        raise ValueError(f"Square needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
    from pyautoattack.square import SquareAttack  # lazy: optional heavy dependency

    work = model if model_dtype(model) == torch.float32 else copy.deepcopy(model).float()
    x32 = x.to(torch.float32)
    with eval_mode(work), frozen_params(work), torch.no_grad(), isolated_rng(x.device):
        attack = SquareAttack(work, norm={"linf": "Linf", "l2": "L2"}[norm], n_queries=n_queries, eps=eps,
                              p_init=0.8, n_restarts=1, seed=int(seed), verbose=False, device=x.device,
                              resc_schedule=False)
        x_adv = attack.perturb(x32, y)
        return correct_finite(work(x_adv), y)


def correct_finite(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) bool: argmax == label with finite logits: how ``landscape evaluate`` and these checks count (an
    attack that drives the outputs to NaN or Inf breaks the attack, not the model, and classifies nothing)."""
    return (logits.argmax(1) == y) & torch.isfinite(logits).all(1)


def square_check(whitebox_correct, square_correct, *, min_gap: float = SQUARE_MIN_GAP) -> dict:
    """Does the black-box attack beat the white-box ones by more than noise? Pure function of per-sample results.

    On the same m samples, ``b`` = broken by Square but not by the white-box attacks, ``c`` = the reverse.
    The gap ``acc_whitebox − acc_square = (b − c)/m``; with no true difference each discordant sample is
    equally likely either way, so ``b − c`` has standard deviation ``sqrt(b + c)`` (McNemar). The flag fires
    when the gap exceeds ``square_margin = max(min_gap, 2·sqrt(b + c)/m)``: two standard deviations, and never
    less than AutoAttack's 0.2 points.

    Args:
        whitebox_correct, square_correct: (m,) bools (tensors, arrays or lists), sample i robust to each.
        min_gap: smallest gap counted. Default :data:`SQUARE_MIN_GAP` (0.002).

    Returns:
        ``{"square_n", "acc_whitebox_sub", "acc_square", "square_gap", "square_margin", "flag_square"}``.
    """
    wb = np.asarray(torch.as_tensor(whitebox_correct).cpu(), dtype=bool).ravel()
    sq = np.asarray(torch.as_tensor(square_correct).cpu(), dtype=bool).ravel()
    if wb.shape != sq.shape or wb.size == 0:
        raise ValueError(f"whitebox_correct and square_correct must be equal-length, non-empty; got {wb.size} "
                         f"and {sq.size}")
    m = wb.size
    b, c = int((wb & ~sq).sum()), int((sq & ~wb).sum())
    gap, margin = (b - c) / m, max(float(min_gap), 2 * math.sqrt(b + c) / m)
    return {"square_n": m, "acc_whitebox_sub": float(wb.mean()), "acc_square": float(sq.mean()),
            "square_gap": gap, "square_margin": margin, "flag_square": bool(gap > margin)}


# ------------------------------------------------------------------------------------- the toolkit's own

def _probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: torch.Tensor, *, eps: float, norm: str,
           probes: int, seed: int) -> torch.Tensor:
    """(B, ...) the box-clipped random vertex of the eps ball (of ``probes``) that raises each loss most."""
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    best, best_delta = torch.full_like(loss, -math.inf), torch.zeros_like(x)
    for _ in range(probes):
        r = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        if norm == "linf":
            d = eps * torch.where(r >= 0, 1.0, -1.0).to(x.dtype)
        else:
            d = eps * r / r.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, *([1] * (x.dim() - 1)))
        d = (x + d).clamp(0, 1) - x
        with torch.no_grad():
            gain = per_sample_loss(model(x + d), y) - loss
        better = gain > best
        best = torch.where(better, gain, best)
        best_delta[better] = d[better]
    return best_delta


def landscape_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_pgd: torch.Tensor, *, eps: float,
                    norm: str = "linf", probes: int = PROBES, ratio_max: float = TAYLOR_RATIO_MAX,
                    seed: int = 0) -> dict:
    """The landscape signature of gradient masking: the loss rises where the gradient does not lead.

    Tries ``probes`` random vertices of the eps ball (L∞: ``eps·sign``; L2: random directions of length eps;
    clipped to [0,1]) and keeps per sample the one that raises the loss most, ``δ_r``. Then

    * ``taylor_gap_mean`` = mean of :func:`landscape.measures.taylor_gap` along ``δ_r``
      (``L(x+δ_r) − L(x) − ∇ₓLᵀδ_r``: the part of the increase the gradient does not predict);
    * ``pgd_increase_mean`` = mean of ``L(x_pgd) − L(x)``, the increase gradient ascent found;
    * ``taylor_ratio`` = ``taylor_gap_mean / max(pgd_increase_mean, 1e-4)`` (NaN when the gap is below 1e-4 nats:
      nothing to compare); ``flag_landscape`` = ``taylor_ratio > ratio_max``; a non-finite PGD point (NaN
      gradients) counts as no step;
    * ``fo_share_median`` = median of :func:`landscape.measures.first_order_share` with the strongest of
      ``x_pgd`` and ``x + δ_r`` per sample (NaN where no increase >= 1e-4): reported, not flagged on its
      own, since softmax saturation puts it near 0 on honest models too (see docs/evaluation.md).

    On an honest model a few random vertices are a far weaker search than PGD (ratio about 0.1); a ratio
    above 1 means random guessing beats gradient ascent by more than the whole increase PGD finds.

    Returns:
        ``{"fo_share_median", "taylor_gap_mean", "pgd_increase_mean", "taylor_ratio", "flag_landscape"}``.
    """
    eps = _check_eps(eps)
    norm = _check_norm(norm).value
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be an integer >= 1, got {probes!r}")
    x, y = check_model_batch(model, x, y, unit_box=True)
    x_pgd = x_pgd.detach().to(device=x.device, dtype=x.dtype)
    if x_pgd.shape != x.shape:
        raise ValueError(f"x_pgd must have the shape of x {tuple(x.shape)}, got {tuple(x_pgd.shape)}")
    broken = ~torch.isfinite(x_pgd).flatten(1).all(1)  # NaN gradients leave NaN PGD points: count as no step
    x_pgd = torch.where(broken.reshape(-1, *([1] * (x.dim() - 1))), x, x_pgd)
    with eval_mode(model), frozen_params(model), isolated_rng(x.device):
        with torch.no_grad():
            loss = per_sample_loss(model(x), y)
            pgd_gain = per_sample_loss(model(x_pgd), y) - loss
        delta_r = _probe(model, x, y, loss, eps=eps, norm=norm, probes=probes, seed=seed)
        with torch.no_grad():
            probe_gain = per_sample_loss(model(x + delta_r), y) - loss
        gap = taylor_gap(model, x, y, delta_r)
        strongest = torch.where((probe_gain > pgd_gain).reshape(-1, *([1] * (x.dim() - 1))), x + delta_r, x_pgd)
        share = first_order_share(model, x, y, strongest, eps=eps, norm=norm)
    gap_mean, pgd_mean = float(gap.double().mean()), float(pgd_gain.double().mean())
    ratio = gap_mean / max(pgd_mean, MIN_INCREASE) if gap_mean >= MIN_INCREASE else math.nan
    finite = share[torch.isfinite(share)]
    return {"fo_share_median": float(finite.double().median()) if finite.numel() else math.nan,
            "taylor_gap_mean": gap_mean, "pgd_increase_mean": pgd_mean, "taylor_ratio": ratio,
            "flag_landscape": bool(ratio > ratio_max)}  # NaN > r is False


# ------------------------------------------------------------------------------------- all together

def masking_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                   pgd: AttackSettings | None = None, square: bool = True, square_n: int = 100,
                   square_queries: int = SQUARE_QUERIES, seed: int = 0) -> dict:
    """Every sanity flag on one batch (use up to a few hundred samples: the checks cost a few attacks).

    FGSM and PGD (``pgd``, default ``AttackSettings.official(eps)``) are run on the batch; Square on its first
    ``square_n`` samples (skipped with ``square=False``: its columns are then NaN and the flag False).

    Returns:
        One flat dict: the columns of :func:`gradient_check`, :func:`randomness_check`,
        :func:`probability_check`, :func:`square_check`, :func:`landscape_check`, ``check_n`` and
        ``flagged`` (any flag).
    """
    eps = _check_eps(eps)
    norm = _check_norm(norm).value
    pgd = AttackSettings.official(eps, norm=norm) if pgd is None else pgd
    if not isinstance(pgd, AttackSettings):
        raise TypeError(f"pgd must be an AttackSettings, got {type(pgd).__name__}")
    x, y = check_model_batch(model, x, y, unit_box=True)
    row = {"check_n": int(x.shape[0])}
    row.update(gradient_check(model, x, y))
    row.update(randomness_check(model, x, seed=seed))
    row.update(probability_check(model, x))
    with isolated_rng(x.device):
        x_pgd, _ = run_attack(model, x, y, pgd, seed=seed)
        x_fgsm, _ = run_attack(model, x, y, AttackSettings("fgsm", eps, norm=norm), seed=seed)
        with eval_mode(model), frozen_params(model), torch.no_grad():
            whitebox = correct_finite(model(x_pgd), y) & correct_finite(model(x_fgsm), y)
    if square:
        m = min(int(square_n), x.shape[0])
        sq = square_correct(model, x[:m], y[:m], eps=eps, norm=norm, n_queries=square_queries, seed=seed)
        row.update(square_check(whitebox[:m], sq))
    else:
        row.update({"square_n": 0, "acc_whitebox_sub": math.nan, "acc_square": math.nan, "square_gap": math.nan,
                    "square_margin": math.nan, "flag_square": False})
    row.update(landscape_check(model, x, y, x_pgd, eps=eps, norm=norm, seed=seed))
    row["flagged"] = any(bool(row[f.column]) for f in FLAGS.values())
    return row


def flag_table(row: dict) -> pd.DataFrame:
    """Long table of one row's flags: ``flag, column, source, flagged, value_name, value, threshold, meaning``."""
    rows = []
    for name, f in FLAGS.items():
        if f.column not in row:
            continue
        rows.append({"flag": name, "column": f.column, "source": f.source, "flagged": bool(row[f.column]),
                     "value_name": f.value, "value": row.get(f.value, math.nan),
                     "threshold": row.get("square_margin", math.nan) if name == "square" else f.threshold,
                     "meaning": f.meaning})
    return pd.DataFrame(rows, columns=["flag", "column", "source", "flagged", "value_name", "value", "threshold",
                                       "meaning"])


def flag_lines(row: dict) -> list[str]:
    """One line per flag for a command's summary: ``FLAG zero_grad: ...`` / ``ok   zero_grad: ...``."""
    lines = []
    for rec in flag_table(row).to_dict("records"):
        value = rec["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        threshold = rec["threshold"] if isinstance(rec["threshold"], str) else f"> {rec['threshold']:.3g}"
        lines.append(f"{'FLAG' if rec['flagged'] else 'ok  '} {rec['flag']} ({rec['source']}): {rec['value_name']} "
                     f"{shown} (flag {threshold}) — {rec['meaning']}")
    return lines
