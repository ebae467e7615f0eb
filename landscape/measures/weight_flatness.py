"""Flatness of the robust loss in weight space: Stutz et al.'s average- and worst-case flatness, and AWP's
weight-perturbed robust loss.

The robust loss of a probe is ``L_rob(w) = (1/N) Σ_i CE(f_w(x_adv_i), y_i)`` with ``x_adv`` from the attack.
A probe is a list of :class:`ProbeBatch` ``(x, y, x_adv, seed)``: the clean inputs, labels, adversarial
inputs and the seed that made them (a re-attack at perturbed weights uses it again, so at zero perturbation
it gives back ``x_adv`` exactly).

Perturbations are *relative per layer* (per parameter tensor ``l``): ``‖ν_l‖₂ ≤ ξ‖w_l‖₂``, which makes the
measures invariant to a rescaling of a layer's weights (Stutz et al. 2021, Sec. 4; Wu et al. 2020, Eq. 8).

* :func:`flatness_average` — Stutz et al. (2021) average-case flatness:
  ``E_ν[L_rob(w + ν)] − L_rob(w)``, ν uniform in the relative ball (default ξ = 0.5, 10 draws).
* :func:`flatness_worst` — Stutz et al. (2021) worst-case flatness: ``max_ν L_rob(w + ν) − L_rob(w)`` over
  the relative ball (default ξ = 0.00075), the max found by projected gradient ascent on the weights, with
  the inner maximisation over inputs re-done (PGD from the table's attack settings) at each perturbed point.
* :func:`awp_loss` — the AWP weight-perturbed robust loss (Wu et al. 2020): one normalised ascent step
  ``v_l = γ‖w_l‖ g_l/‖g_l‖`` (γ = 5e-3) on the weights of dimension > 1 (the official code leaves biases and
  BN parameters unperturbed), then ``L_rob(w + v)`` at the same ``x_adv``.

Stutz, Hein & Schiele, "Relating Adversarially Robust Generalization to Flat Minima", ICCV 2021.
Wu, Xia & Wang, "Adversarial Weight Perturbation Helps Robust Generalization", NeurIPS 2020.

Every function runs under :func:`~landscape.measures.weight_hessian.preserved`: eval mode, weights
perturbed in place and restored bit for bit afterwards (also on an exception); randomness from a
``torch.Generator`` seeded by ``seed``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn

from ..attacks import AttackSettings, run_attack
from .weight_hessian import check_batches, preserved, probe_loss, probe_loss_grad, select_parameters

__all__ = ["ProbeBatch", "FlatnessEstimate", "flatness_average", "flatness_worst", "awp_loss", "AWP_GAMMA",
           "AVG_XI", "WORST_XI"]

AVG_XI = 0.5
"""Default relative radius of :func:`flatness_average` (Stutz et al. 2021's average-case ξ)."""
WORST_XI = 0.00075
"""Default relative radius of :func:`flatness_worst` (Stutz et al. 2021's worst-case ξ)."""
AWP_GAMMA = 5e-3
"""AWP's relative weight-perturbation size γ (Wu et al. 2020, their CIFAR-10 setting)."""

_TINY = 1e-30


class ProbeBatch(NamedTuple):
    """One probe batch: ``x`` (B, ...) clean inputs, ``y`` (B,), ``x_adv`` (B, ...), ``seed`` of the attack."""

    x: torch.Tensor
    y: torch.Tensor
    x_adv: torch.Tensor
    seed: int = 0


class FlatnessEstimate(NamedTuple):
    """``value`` (perturbed robust loss − robust loss), ``se`` its standard error (0 for a deterministic
    estimate), ``loss`` the robust loss at w, ``perturbed`` the (mean) robust loss at the perturbed weights."""

    value: float
    se: float
    loss: float
    perturbed: float


def _robust(probe: Sequence[ProbeBatch]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b.x_adv, b.y) for b in probe]


def _check_xi(xi: float, name: str = "xi") -> float:
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not math.isfinite(xi) or xi < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {xi!r}")
    return float(xi)


def _check_probe(model: nn.Module, probe: Sequence[ProbeBatch]) -> list[ProbeBatch]:
    out = []
    for b in probe:
        b = ProbeBatch(*b) if not isinstance(b, ProbeBatch) else b
        [(x, y)] = check_batches(model, [(b.x, b.y)])
        [(xa, _)] = check_batches(model, [(b.x_adv, b.y)])
        if xa.shape != x.shape:
            raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(xa.shape)}")
        out.append(ProbeBatch(x, y, xa, int(b.seed)))
    if not out:
        raise ValueError("the probe set is empty")
    return out


def _add(params: list[torch.Tensor], deltas: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, d in zip(params, deltas):
            p.add_(d)


def _random_ball(ref: list[torch.Tensor], xi: float, g: torch.Generator) -> list[torch.Tensor]:
    """Per tensor: uniform in the L2 ball of radius ξ‖w_l‖ (Gaussian direction, radius ξ‖w_l‖·U^(1/d))."""
    out = []
    for w in ref:
        d = torch.randn(w.shape, generator=g, dtype=torch.float64)
        u = torch.rand((), generator=g, dtype=torch.float64) ** (1.0 / max(w.numel(), 1))
        d = d / d.norm().clamp_min(_TINY) * (xi * float(w.norm()) * float(u))
        out.append(d.to(dtype=w.dtype, device=w.device))
    return out


def flatness_average(model: nn.Module, probe: Sequence[ProbeBatch], *, xi: float = AVG_XI, samples: int = 10,
                     layers: str | None = None, seed: int = 0,
                     reattack: AttackSettings | None = None) -> FlatnessEstimate:
    """Stutz et al. (2021) average-case flatness of the robust loss.

    ``E_ν[L_rob(w + ν)] − L_rob(w)``, ν uniform in ``{‖ν_l‖₂ ≤ ξ‖w_l‖₂}`` per selected parameter tensor l,
    estimated from ``samples`` draws (its standard error reported). ``L_rob`` at ``w + ν`` uses the probe's
    fixed ``x_adv``, or ``x_adv`` re-attacked at ``w + ν`` when ``reattack`` gives the attack (Stutz et al.
    re-attack; the fixed point is the cheaper default of the table, a lower bound of the re-attacked value).

    Args:
        model: the classifier (restored bit for bit afterwards).
        probe: :class:`ProbeBatch` list.
        xi: relative radius ξ ≥ 0. Default 0.5.
        samples: draws of ν. Default 10.
        layers: glob of the perturbed parameters; None = all.
        seed: seed of the draws.
        reattack: attack settings to re-attack at each ``w + ν``; None = fixed ``x_adv``.
    """
    xi = _check_xi(xi)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    with preserved(model):
        probe, names, chosen, ref, base = _start(model, probe, layers)
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        values = []
        for _ in range(samples):
            nu = _random_ball(ref, xi, g)
            _add(chosen, nu)
            try:
                values.append(_robust_loss_at(model, probe, reattack))
            finally:
                with torch.no_grad():
                    for p, r in zip(chosen, ref):
                        p.copy_(r)
    t = torch.tensor(values, dtype=torch.float64)
    se = float(t.std(unbiased=True) / math.sqrt(t.numel())) if t.numel() > 1 else 0.0
    mean = float(t.mean())
    return FlatnessEstimate(mean - base, se, base, mean)


def _start(model: nn.Module, probe: Sequence[ProbeBatch], layers: str | None):
    """``(checked probe, selected names, their parameters, copies of their values, robust loss at w)``."""
    probe = _check_probe(model, probe)
    names = select_parameters(model, layers)
    params = dict(model.named_parameters())
    chosen = [params[n] for n in names]
    return probe, names, chosen, [p.detach().clone() for p in chosen], probe_loss(model, _robust(probe))


def _robust_loss_at(model: nn.Module, probe: Sequence[ProbeBatch], reattack: AttackSettings | None) -> float:
    """The probe's robust loss at the model's current weights: fixed ``x_adv``, or re-attacked."""
    if reattack is None:
        return probe_loss(model, _robust(probe))
    return probe_loss(model, _reattacked(model, probe, reattack))


def _reattacked(model: nn.Module, probe: Sequence[ProbeBatch], settings: AttackSettings):
    return [(run_attack(model, b.x, b.y, settings, seed=b.seed)[0], b.y) for b in probe]


def _normalised_step(grads: list[torch.Tensor], ref: list[torch.Tensor], size: float) -> list[torch.Tensor]:
    """Per tensor: ``size·‖w_l‖ · g_l/‖g_l‖`` (0 where g_l = 0)."""
    return [g * (size * float(w.norm()) / max(float(g.norm()), _TINY)) for g, w in zip(grads, ref)]


def _project(nu: list[torch.Tensor], ref: list[torch.Tensor], xi: float) -> list[torch.Tensor]:
    """Per tensor: ν_l scaled into ``‖ν_l‖ ≤ ξ‖w_l‖``."""
    out = []
    for d, w in zip(nu, ref):
        radius, norm = xi * float(w.norm()), float(d.norm())
        out.append(d * (radius / norm) if norm > radius else d)
    return out


def flatness_worst(model: nn.Module, probe: Sequence[ProbeBatch], settings: AttackSettings, *,
                   xi: float = WORST_XI, steps: int = 5, step_size: float | None = None,
                   layers: str | None = None) -> FlatnessEstimate:
    """Stutz et al. (2021) worst-case flatness of the robust loss.

    ``max_{‖ν_l‖ ≤ ξ‖w_l‖} L_rob(w + ν) − L_rob(w)``, the outer max by ``steps`` steps of projected,
    per-layer normalised gradient ascent on ν (``ν_l += α ξ‖w_l‖ g_l/‖g_l‖``, then projection on the
    relative ball); the inner max over inputs is re-done at each ``w + ν`` by re-attacking the clean inputs
    with ``settings`` and the probe's seeds (the definition's robust loss is a max over δ at the perturbed
    weights). The first ascent step uses the given ``x_adv``; ``L_rob(w)`` is the given ``x_adv``'s loss, so
    ξ = 0 gives exactly 0 when ``x_adv`` came from ``run_attack(model, x, y, settings, seed=seed)``.

    Args:
        model: the classifier (restored bit for bit afterwards).
        probe: :class:`ProbeBatch` list.
        settings: the attack of the inner maximisation.
        xi: relative radius ξ ≥ 0. Default 0.00075.
        steps: ascent steps on the weights. Default 5.
        step_size: α, relative to ξ; default 2.5/steps (Madry et al.'s rule, as the toolkit's PGD).
        layers: glob of the perturbed parameters; None = all.
    """
    xi = _check_xi(xi)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    alpha = 2.5 / steps if step_size is None else _check_xi(step_size, "step_size")
    with preserved(model):
        probe, names, chosen, ref, base = _start(model, probe, layers)
        nu = [torch.zeros_like(r) for r in ref]
        points = _robust(probe)
        for step in range(steps):
            if step > 0:
                points = _reattacked(model, probe, settings)
            _, grads = probe_loss_grad(model, points, names)
            nu = _project([d + s for d, s in zip(nu, _normalised_step(grads, ref, alpha * xi))], ref, xi)
            with torch.no_grad():
                for p, r, d in zip(chosen, ref, nu):
                    p.copy_(r + d)
        perturbed = probe_loss(model, _reattacked(model, probe, settings))
    return FlatnessEstimate(perturbed - base, 0.0, base, perturbed)


def awp_loss(model: nn.Module, probe: Sequence[ProbeBatch], *, gamma: float = AWP_GAMMA,
             layers: str | None = None) -> FlatnessEstimate:
    """The AWP weight-perturbed robust loss (Wu et al. 2020).

    One ascent step on the robust loss at the fixed ``x_adv``: ``v_l = γ‖w_l‖ g_l/‖g_l‖`` for every selected
    parameter tensor of dimension > 1 (AWP's official code perturbs weights, not biases or BN parameters),
    then ``L_rob(w + v)`` at the same ``x_adv``. ``value`` is the increase ``L_rob(w + v) − L_rob(w)``,
    ``perturbed`` the perturbed loss itself.
    """
    gamma = _check_xi(gamma, "gamma")
    with preserved(model):
        probe = _check_probe(model, probe)
        params = dict(model.named_parameters())
        names = [n for n in select_parameters(model, layers) if params[n].dim() > 1]
        if not names:
            raise ValueError(f"layers={layers!r} selects no weight of dimension > 1 for AWP")
        chosen = [params[n] for n in names]
        ref = [p.detach().clone() for p in chosen]
        base, grads = probe_loss_grad(model, _robust(probe), names)
        _add(chosen, _normalised_step(grads, ref, gamma))
        perturbed = probe_loss(model, _robust(probe))
    return FlatnessEstimate(perturbed - base, 0.0, base, perturbed)
